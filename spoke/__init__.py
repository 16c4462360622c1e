"""The spoke: serves DHCP from its blocks, commits every binding to etcd before the ACK.

May import `hub` (a hub-eligible spoke runs the hub role in-process) and `hubspoke`.
"""

import hubspoke as _hubspoke  # noqa: F401

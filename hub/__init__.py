"""The hub: the role under the epoch fence, the planner, the management API and the CLI.

Imports `hubspoke` (whose import sets gRPC's process defaults) and never `spoke`.
"""

import hubspoke as _hubspoke  # noqa: F401

"""DHCP knowledge the hub needs without the spoke: the option table, typed option values and
the error types they raise. Pure; no I/O. `spoke.dhcp` builds on it; it never imports `spoke`.
"""

"""The spoke. Imports `hub` first: its process defaults for gRPC must precede grpc's import."""

import hub as _hub  # noqa: F401

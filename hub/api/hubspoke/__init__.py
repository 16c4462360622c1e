"""Generated code for hubspoke's own gRPC API (see proto/hub/api/hubspoke)."""

"""Generated code for hubspoke's own gRPC API (see proto/hubspoke/api/hubspoke)."""

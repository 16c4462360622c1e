"""Generated gRPC and protobuf code; written only by scripts/genproto.py."""

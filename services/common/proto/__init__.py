"""Generated gRPC/protobuf stubs of protos/crossadapt/v1 (scripts/gen-protos; do not edit)."""

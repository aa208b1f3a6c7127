"""The Open Inference Protocol v2 gRPC endpoint (`inference.GRPCInferenceService`)."""

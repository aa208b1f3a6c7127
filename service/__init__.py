"""Serving: a BentoML service over one data plane, speaking REST, OIP v2 REST and OIP v2 gRPC."""

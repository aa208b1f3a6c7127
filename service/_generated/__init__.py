"""Code generated from service/protos/grpc_predict_v2.proto by service/protos/generate.py; do not edit."""

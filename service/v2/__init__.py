"""Open Inference Protocol v2 over REST: body codec (with binary tensor data) and Starlette routes."""

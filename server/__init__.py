"""The data plane's server: Falcon (ASGI) under gunicorn, serving the ONNX models of the volume."""

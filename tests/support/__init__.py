"""Test support: real processes on free loopback ports, ONNX model builders, polling waits."""

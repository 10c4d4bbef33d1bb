"""The two contracts between components, defined once: the MLflow registry and the volume."""

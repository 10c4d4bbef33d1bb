"""The sidecar: the Production version of each model from MLflow into the shared volume."""

"""The control plane: models.yaml -> MLflow Model Registry (validate, plan, apply)."""

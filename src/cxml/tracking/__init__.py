"""MLflow: runs, the model registry and its aliases (candidate, champion, one per environment)."""

"""The ML library. Pure Python/numpy/torch: never imports Prefect, MLflow, boto3 or plmops.infra."""

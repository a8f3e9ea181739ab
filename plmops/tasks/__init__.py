"""Prefect tasks: thin wrappers joining plmops.platform and plmops.infra."""

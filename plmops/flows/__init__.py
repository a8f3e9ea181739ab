"""Prefect flows, one module per pipeline stage."""

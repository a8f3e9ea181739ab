"""Adapters to the outside world: settings, storage, tracking."""

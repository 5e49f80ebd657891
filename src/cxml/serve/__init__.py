"""Serving a model over HTTP: the app, request parsing, the model service, metrics, workers."""

"""Deploying a model: the client side (plan, bundle, ssh) and the host side (`deploy.host`)."""

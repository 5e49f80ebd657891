"""The host side of a deploy, run on the serving host as `python -m cxml.deploy.host`.

Imports only core, records and serve: the host has no torch-free client code to load."""

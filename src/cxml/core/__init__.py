"""What every part shares: errors, environment, files, params.yaml, console, GitHub Actions I/O.

Imports nothing else of cxml."""

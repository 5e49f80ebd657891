"""What every part shares: errors, env, files, params.yaml, console, Actions I/O, redaction, git.

Imports nothing else of cxml."""

"""`python -m cxml.deploy.host`."""

from cxml.core.console import run_entry_point
from cxml.deploy.host.command import main

raise SystemExit(run_entry_point(main))

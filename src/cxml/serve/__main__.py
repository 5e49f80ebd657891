"""`python -m cxml.serve`."""

from cxml.core.console import run_entry_point
from cxml.serve.step import main

raise SystemExit(run_entry_point(main))

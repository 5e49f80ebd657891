"""`python -m cxml.gate`."""

from cxml.core.console import run_entry_point
from cxml.gate.step import main

raise SystemExit(run_entry_point(main))

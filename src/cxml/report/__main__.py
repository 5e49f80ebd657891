"""`python -m cxml.report`."""

from cxml.core.console import run_entry_point
from cxml.report.step import main

raise SystemExit(run_entry_point(main))

"""`python -m cxml` is the `cxml` command."""

from cxml.cli import main

raise SystemExit(main())

"""`python -m fitlens` runs the command-line tool."""

from fitlens.cli import main

raise SystemExit(main())

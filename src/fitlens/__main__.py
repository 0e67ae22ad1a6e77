"""`python -m fitlens` runs the command-line tool."""

from fitlens.cli.main import main

raise SystemExit(main())

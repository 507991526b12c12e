"""`python -m prober` runs the command line."""

from prober.cli.main import main

raise SystemExit(main())

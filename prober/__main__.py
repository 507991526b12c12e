"""`python -m prober` runs the command line."""

from prober.cli import main

raise SystemExit(main())

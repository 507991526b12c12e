"""`prober` as the benchmark starts it: the CLI, with the event loop PROBER_UVLOOP picks."""

from __future__ import annotations

import sys

from prober.cli.main import main
from prober.engine.loop import use_event_loop

if __name__ == "__main__":
    use_event_loop()
    sys.exit(main())

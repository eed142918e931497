"""The entry point every stage script goes through: one-line errors, non-zero exit."""
from __future__ import annotations

import signal
import sys
from typing import Callable

from cifarbudget.errors import UserError


def run_stage(main: Callable[[], None]) -> None:
    """Run `main`; a UserError prints `error: ...` on one line and exits with status 2."""
    # A process started in the background by a shell script (`dvc repro &`) inherits an ignored
    # SIGINT, and Python then installs no handler: Ctrl-C or `pkill -INT` would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}" if str(exc) else
              "interrupted; rerun `dvc repro` (a training stage continues from its last "
              "checkpoint, if it wrote one)", file=sys.stderr)
        sys.exit(130)

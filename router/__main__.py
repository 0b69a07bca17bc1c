"""``python -m router ...``: the command-line interface (see :mod:`router.cli`)."""

from router.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

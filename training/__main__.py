"""``python -m training <command> [args]``: dispatch to a training entry point.

Each command is a module with ``main(argv: list[str] | None) -> int``; modules are imported only
when their command runs, so ``python -m training --help`` stays fast. Add a command by adding a
line to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

#: command name -> module path holding ``main(argv)``.
COMMANDS: dict[str, str] = {
    "fit": "training.fit",
    "evaluate": "training.evaluate",
    "bandit": "training.bandit",
    "tune": "training.tune",
    "promote": "training.promote",
    "demo": "training.demo",
}


def _usage() -> str:
    return "usage: python -m training <command> [args]\ncommands: " + ", ".join(sorted(COMMANDS))


def main(argv: list[str] | None = None) -> int:
    """Run the named command with the remaining arguments; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}.\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

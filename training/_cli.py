"""One ``--flag`` per field of an ``Args`` dataclass: the parsers of the training entry points."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

__all__ = ["dataclass_parser"]

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float,
                          "str | None": str}


def dataclass_parser(cls: type, prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with ``--field-name`` for every field of ``cls`` (booleans as ``--x/--no-x``).

    Help text comes from each field's ``metadata["help"]`` when present.

    Example:
        >>> @dataclasses.dataclass
        ... class A:
        ...     steps: int = 3
        ...     track: bool = True
        >>> vars(dataclass_parser(A, "demo", None).parse_args(["--steps", "5", "--no-track"]))
        {'steps': 5, 'track': False}
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = str(f.metadata.get("help", "")) or None
        if str(f.type) in ("bool", "<class 'bool'>") or f.type is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=_TYPES.get(str(f.type), str), default=f.default, help=help_)
    return parser

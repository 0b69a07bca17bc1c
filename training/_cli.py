"""The one ``Args`` convention of the training entry points.

Every command declares a dataclass ``Args`` whose fields are made with :func:`arg`: the default, the
help text and the allowed values (``choices`` or numeric bounds). From it

* :func:`dataclass_parser` builds the parser: one ``--field-name`` per field (booleans as
  ``--x/--no-x``, fields without a default are required), each with its help text, allowed values
  and default shown in ``--help``;
* :func:`check_args` checks values against the declared choices and bounds, then runs the class's
  own ``check()`` for rules that tie several fields together -- for arguments built in code as
  well as parsed ones;
* :func:`parse` does both and turns a bad value into a usage error (exit code 2) before anything
  heavy is imported, any model loads or any MLflow run starts.

``vars(args)`` is what gets logged as the run's parameters. :func:`note` prints a note to stderr
once per process, however often the code path that raises it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["arg", "check_args", "check_input", "check_out_dir", "dataclass_parser", "note", "parse"]

T = TypeVar("T")

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float,
                          "str | None": str}
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_NOTES: set[str] = set()


def arg(default: Any = dataclasses.MISSING, *, help: str,
        choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
        gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None) -> Any:
    """A field of an ``Args`` dataclass: its default, help text and allowed values.

    ``choices`` lists the allowed values, or is a function returning them (looked up when the flag is
    shown or checked, e.g. the names in a component registry, so a one-file plugin is accepted); ``gt``/``ge``/``lt``/``le`` bound a number. A field whose
    default is None may also be left unset. No default makes the flag required.

    Example:
        >>> @dataclasses.dataclass
        ... class A:
        ...     steps: int = arg(3, help="steps to run", ge=1)
        >>> dataclasses.fields(A)[0].metadata["help"]
        'steps to run'
    """
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    listed = choices if choices is None or callable(choices) else tuple(choices)
    meta = {"help": help, "choices": listed, "bounds": bounds}
    return dataclasses.field(default=default, metadata=meta)


def _choices(f: dataclasses.Field[Any]) -> tuple[Any, ...] | None:
    """The allowed values of a field (calling a lazy ``choices`` function), or None."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices()) if callable(choices) else tuple(choices)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(f: dataclasses.Field[Any]) -> bool:
    return f.type is bool or str(f.type) in ("bool", "<class 'bool'>")


def _allowed(f: dataclasses.Field[Any]) -> str:
    """The allowed values of a field in words ('' when any value of its type goes)."""
    bounds = f.metadata.get("bounds") or {}
    text = " and ".join(f"{_BOUNDS[k]} {v:g}" for k, v in bounds.items())
    kind = "an integer" if str(f.type).startswith("int") else "a number"
    return f"{kind} {text}" if text else ""


def dataclass_parser(cls: type, prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with ``--field-name`` for every field of ``cls`` (booleans as ``--x/--no-x``).

    Help text comes from each field's ``metadata["help"]`` (required: a field without help is a
    programming error), followed by the allowed values and the default.

    Example:
        >>> @dataclasses.dataclass
        ... class A:
        ...     steps: int = arg(3, help="steps to run")
        ...     mode: str = arg("fast", help="how", choices=("fast", "slow"))
        ...     track: bool = arg(True, help="log it")
        >>> vars(dataclass_parser(A, "demo", None).parse_args(["--steps", "5", "--no-track"]))
        {'steps': 5, 'mode': 'fast', 'track': False}
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = _flag(f.name)
        help_ = str(f.metadata.get("help", "")).strip()
        if not help_:
            raise TypeError(f"{cls.__qualname__}.{f.name}: every Args field needs help text (use training._cli.arg).")
        allowed = _allowed(f)
        if allowed:
            help_ += f"; {allowed}"
        required = f.default is dataclasses.MISSING
        if required:
            help_ += " (required)"
        else:
            shown = "none" if f.default is None else ("yes" if f.default is True else "no" if f.default is False
                                                      else f.default)
            help_ += f" (default: {shown})"
        help_ = help_.replace("%", "%%")
        if _is_bool(f):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_)
            continue
        kw: dict[str, Any] = {"dest": f.name, "type": _TYPES.get(str(f.type), str), "help": help_}
        if required:
            kw["required"] = True
        else:
            kw["default"] = f.default
        listed = _choices(f)
        if listed:  # listed in --help; checked by check_args with a message of our own
            kw["metavar"] = "{" + ",".join(map(str, listed)) + "}"
        parser.add_argument(flag, **kw)
    return parser


def check_args(args: Any) -> None:
    """Check every field of an ``Args`` instance against its declared choices and bounds, then ``args.check()``.

    Raises:
        ConfigError: naming the flag, the allowed values and the value given.
    """
    from router.errors import ConfigError

    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if value is None and f.default is None:
            continue
        flag = _flag(f.name)
        choices = _choices(f)
        if choices and value not in choices:
            raise ConfigError(f"{flag} must be one of {', '.join(map(str, choices))}; got {value!r}.")
        bounds = f.metadata.get("bounds") or {}
        if bounds:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{flag} must be a finite number; got {value!r}.")
            ok = all({"gt": value > b, "ge": value >= b, "lt": value < b, "le": value <= b}[k] for k, b in bounds.items())
            if not ok:
                raise ConfigError(f"{flag} must be {_allowed(f)}; got {value!r}.")
    check = getattr(args, "check", None)
    if callable(check):
        check()


def parse(cls: type[T], argv: Sequence[str] | None, prog: str, description: str | None = None) -> T:
    """Parse ``argv`` into ``cls`` and check it; a bad value exits with a usage error (code 2)."""
    from router.errors import RoutingError

    parser = dataclass_parser(cls, prog, description)
    ns = parser.parse_args(None if argv is None else list(argv))
    args = cls(**vars(ns))
    try:
        check_args(args)
    except RoutingError as exc:
        parser.error(str(exc))
    return args


def note(message: str) -> None:
    """Print ``note: message`` to stderr, once per process for a given message."""
    if message in _NOTES:
        return
    _NOTES.add(message)
    print(f"note: {message}", file=sys.stderr)


def check_out_dir(path: str | None, flag: str = "--out") -> None:
    """An output directory must be creatable: raise when ``path`` is an existing file."""
    from pathlib import Path

    from router.errors import ConfigError

    if path and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{flag} {path} is an existing file; give a directory.")


def check_input(path: str | None, flag: str, what: str) -> None:
    """An input path must exist (``models:/`` and ``runs:/`` URIs are resolved later, by MLflow)."""
    from pathlib import Path

    from router.errors import SourceNotFoundError

    if path and not path.startswith(("models:/", "runs:/")) and not Path(path).exists():
        raise SourceNotFoundError(f"{flag} {path}: no such {what}.")

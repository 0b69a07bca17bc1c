"""Saving components without pickles: ``<name>.json`` (kind + config) and ``<name>.npz`` (arrays).

This is the one on-disk format of every component (encoders, predictors, cost models, policies,
preprocessors). Loading resolves ``kind`` through :mod:`router.registry`, which knows only classes
already defined (this package's modules, found by discovery, and any a program imported itself), so a
saved router can never name a module to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from router.base import Component
from router.errors import PersistenceError

__all__ = ["component_class", "load_component", "read_json", "save_component", "write_json"]


def component_class(kind: str) -> type[Component]:
    """The :class:`Component` subclass registered under ``kind`` (see :mod:`router.registry`)."""
    from router import registry

    cls: type[Component] = registry.find(kind)
    return cls


def _jsonable(value: Any) -> Any:
    if isinstance(value, Component):  # nested component (e.g. the encoder an embedding cache wraps)
        return {"__component__": {"kind": value.kind, "config": _jsonable(value.get_config())}}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    if not path.exists():
        raise PersistenceError(f"{path} is missing; is this a directory written by save()?")
    return json.loads(path.read_text())


def save_component(obj: Component, directory: Path, name: str) -> None:
    """Write ``name.json`` and, when the component has learned arrays, ``name.npz``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / f"{name}.json", {"kind": obj.kind, "config": _jsonable(obj.get_config())})
    state = obj.get_state()
    if state:
        arrays = {k: np.asarray(v) for k, v in state.items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise PersistenceError(f"{type(obj).__name__} state {bad} is not numeric; store it in the config.")
        np.savez(str(directory / f"{name}.npz"), **arrays)  # type: ignore[arg-type]


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__component__"}:
            spec = value["__component__"]
            return component_class(spec["kind"]).from_config(_revive(spec["config"]))
        return {k: _revive(v) for k, v in value.items()}
    return value


def load_component(directory: Path, name: str) -> Component:
    """Rebuild a component written by :func:`save_component`."""
    meta = read_json(directory / f"{name}.json")
    cls = component_class(meta["kind"])
    state_path = directory / f"{name}.npz"
    state: dict[str, np.ndarray] = {}
    if state_path.exists():
        with np.load(state_path, allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
    return cls.from_config(_revive(meta["config"]), state)

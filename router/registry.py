"""One registry per component family: encoders, quality predictors, cost models and policies.

A component registers itself: any subclass of :class:`router.base.Component` that sets a ``kind``
is entered, when its class is created, in the table of its family (the ``family`` its base class
declares: ``"encoder"``, ``"predictor"``, ``"cost"``, ``"policy"``; other parts such as the prefix
stripper are in ``"component"``). Every module of a family's package (``router/encoders/``,
``router/predictors/``, ``router/policies/``; for cost models the modules ``router/cost*.py``) is
imported on first look-up (:func:`discover`), so **a new component is one new file** there -- persistence, the
command lines (``training fit --predictor``, ``training bandit --policy``, ``--encoder``), the
ensemble's members and tuning all find it here. For example, ``router/predictors/column_mean.py``::

    import numpy as np
    from router.predictors._common import BasePredictor

    class ColumnMean(BasePredictor):
        kind = "column_mean"          # the name on the command line and in saved routers

        def _fit(self, x, q):
            self.mean_ = q.mean(axis=0)

        def _predict(self, x):
            return np.tile(self.mean_, (x.shape[0], 1))

        def get_state(self):
            return {**self._shape_state(), "mean_": self.mean_}

        def set_state(self, state):
            self._set_shape_state(state)
            self.mean_ = np.asarray(state["mean_"])

A class may also declare ``aliases`` (other names the command lines accept, e.g. ``"minilm"`` for
``"sentence_transformer"``) and a ``search_space`` (:class:`FloatParam` / :class:`IntParam` /
:class:`Choice` per constructor argument) that ``training tune`` samples with Optuna.

Loading a saved router resolves kinds only among registered classes, i.e. classes some module has
already defined; a saved file can never name a module to import.

Example:
    >>> sorted(kinds("policy"))[:3]
    ['egreedy', 'linucb', 'neural']
    >>> get("predictor", "mf").kind
    'matrix_factorization'
    >>> create("encoder", "hashing", dim=8).dim
    8
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import ConfigError

__all__ = [
    "FAMILIES",
    "Choice",
    "FloatParam",
    "IntParam",
    "create",
    "discover",
    "find",
    "get",
    "kinds",
    "names",
    "register",
    "search_space",
    "table",
    "unregister",
]

#: family -> where its components live: packages (every public module is imported), single modules,
#: or ``package.pattern*`` (the package's modules whose names match, e.g. ``router/cost_quantile.py``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "encoder": ("router.encoders",),
    "predictor": ("router.predictors",),
    "cost": ("router.cost*",),
    "policy": ("router.policies",),
    "component": ("router.encoders", "router.features", "router.costs", "router.predictors", "router.ood"),
}

_TABLES: dict[str, dict[str, type[Any]]] = {f: {} for f in FAMILIES}
_ALIASES: dict[str, dict[str, str]] = {f: {} for f in FAMILIES}
_SCANNED: set[tuple[str, tuple[str, ...]]] = set()


# --------------------------------------------------------------------------- search spaces
@dataclass(frozen=True)
class FloatParam:
    """A float hyperparameter in ``[low, high]`` (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))


@dataclass(frozen=True)
class IntParam:
    """An int hyperparameter in ``[low, high]``."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high, log=self.log))


@dataclass(frozen=True)
class Choice:
    """One of a few values."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


# --------------------------------------------------------------------------- registration
def _family_of(cls: type) -> str:
    family = str(getattr(cls, "family", "component"))
    if family not in FAMILIES:
        raise ConfigError(f"{cls.__qualname__}: unknown component family {family!r}; use one of {sorted(FAMILIES)}.")
    return family


def _same_class(a: type, b: type) -> bool:
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(cls: type) -> type:
    """Enter ``cls`` under its ``kind`` (and ``aliases``) in its family's table; returns ``cls``.

    Called for every :class:`~router.base.Component` subclass with a ``kind`` when the class is
    created, so it is rarely called by hand. A kind names one class across all families (saved
    files store only the kind); redefining the same class (a module reloaded) replaces it.
    """
    kind = str(cls.__dict__.get("kind", "") or "")
    if not kind:
        return cls
    family = _family_of(cls)
    for fam, tab in _TABLES.items():
        old = tab.get(kind)
        if old is not None and not _same_class(old, cls):
            raise ConfigError(
                f"component kind {kind!r} is taken by {old.__module__}.{old.__qualname__} ({fam}); "
                f"give {cls.__module__}.{cls.__qualname__} another kind."
            )
    _TABLES[family][kind] = cls
    for alias in getattr(cls, "aliases", ()) or ():
        taken = _ALIASES[family].get(alias)
        if (taken is not None and taken != kind) or (alias in _TABLES[family] and alias != kind):
            raise ConfigError(f"alias {alias!r} of {kind!r} is already a {family} name.")
        _ALIASES[family][alias] = kind
    return cls


def unregister(family: str, kind: str) -> None:
    """Remove ``kind`` (and its aliases) from ``family`` -- for tests that register throw-away components."""
    _TABLES[family].pop(kind, None)
    for alias in [a for a, k in _ALIASES[family].items() if k == kind]:
        del _ALIASES[family][alias]


def _package_path(name: str) -> tuple[str, ...]:
    mod = importlib.import_module(name)
    return tuple(getattr(mod, "__path__", ()) or ())


def discover(family: str) -> None:
    """Import every public module of ``family``'s packages, so their components register themselves.

    Modules whose name starts with ``_`` are helpers and are skipped; a package is scanned again
    only when its ``__path__`` changed.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown component family {family!r}; use one of {sorted(FAMILIES)}.")
    for entry in FAMILIES[family]:
        name, pattern = (entry.rsplit(".", 1) if "*" in entry else (entry, "*"))
        path = _package_path(name)
        key = (entry, path)
        if key in _SCANNED:
            continue
        for info in pkgutil.iter_modules(list(path)):
            if not info.name.startswith("_") and fnmatch.fnmatchcase(info.name, pattern):
                importlib.import_module(f"{name}.{info.name}")
        _SCANNED.add(key)


# --------------------------------------------------------------------------- look-up
def kinds(family: str) -> list[str]:
    """Registered kinds of ``family`` (sorted)."""
    discover(family)
    return sorted(_TABLES[family])


def names(family: str) -> list[str]:
    """Every name the command lines accept for ``family``: kinds and aliases (sorted).

    A class that only wraps another component (``standalone = False``, e.g. the embedding cache) is
    found by :func:`get` for loading but is not offered on the command lines.
    """
    discover(family)
    kinds_ = {k for k, cls in _TABLES[family].items() if getattr(cls, "standalone", True)}
    return sorted({*kinds_, *(a for a, k in _ALIASES[family].items() if k in kinds_)})


def get(family: str, name: str) -> type[Any]:
    """The class registered in ``family`` under ``name`` (a kind or an alias)."""
    discover(family)
    kind = _ALIASES[family].get(name, name)
    cls = _TABLES[family].get(kind)
    if cls is None:
        raise ConfigError(f"unknown {family} {name!r}; choose one of {names(family)}.")
    return cls


def find(kind: str) -> type[Any]:
    """The class of ``kind`` in any family (what a saved file names); kinds are unique across families."""
    for family in FAMILIES:
        discover(family)
    for tab in _TABLES.values():
        if kind in tab:
            return tab[kind]
    known = sorted({k for tab in _TABLES.values() for k in tab})
    from router.errors import PersistenceError

    raise PersistenceError(f"unknown component kind {kind!r}; known kinds: {known}.")


def create(family: str, name: str, *, seed: int | None = None, **kwargs: Any) -> Any:
    """Build the component ``name`` of ``family`` with ``kwargs``; ``seed`` is passed when it takes one.

    Raises:
        ConfigError: unknown name, or arguments the class does not take (the message lists them).
    """
    cls = get(family, name)
    params = inspect.signature(cls.__init__).parameters
    if seed is not None and "seed" in params:
        kwargs = {**kwargs, "seed": int(seed)}
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = sorted(k for k in params if k != "self")
        raise ConfigError(f"Bad arguments for {family} {name!r}: it takes no {unknown}; its arguments are {allowed}.")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Bad arguments for {family} {name!r}: {exc}.") from exc


def search_space(family: str, name: str) -> dict[str, Any]:
    """The Optuna search space the class declares (``{argument: FloatParam | IntParam | Choice}``)."""
    return dict(getattr(get(family, name), "search_space", {}) or {})


class _Table(Mapping[str, type[Any]]):
    """A read-only, always-current view ``kind -> class`` of one family."""

    def __init__(self, family: str) -> None:
        self._family = family

    def __getitem__(self, name: str) -> type[Any]:
        discover(self._family)
        kind = _ALIASES[self._family].get(name, name)
        return _TABLES[self._family][kind]

    def __iter__(self) -> Iterator[str]:
        return iter(kinds(self._family))

    def __len__(self) -> int:
        return len(kinds(self._family))

    def __repr__(self) -> str:
        return f"<{self._family} registry: {kinds(self._family)}>"


def table(family: str) -> Mapping[str, type[Any]]:
    """A live, read-only ``kind -> class`` mapping of ``family`` (``PREDICTORS``, ``POLICIES``, ``ENCODERS``)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown component family {family!r}; use one of {sorted(FAMILIES)}.")
    return _Table(family)

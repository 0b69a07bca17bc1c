"""Exception tree of the toolkit.

Every error the library raises on purpose derives from :class:`RoutingError`, so callers can
catch one class. Messages say what is wrong *and* what to do about it.

::

    RoutingError
    ├── DataError                    bad or unreadable input data
    │   ├── SchemaError              missing column, wrong type (names file, row, column)
    │   ├── ValidationError          values out of range, duplicates, unknown models
    │   ├── SourceNotFoundError      a data source name or path that does not resolve
    │   └── ContextWindowError       a prompt longer than every allowed model's context window
    ├── ConfigError                  invalid constructor arguments or settings
    ├── NotFittedError               a predictor / policy / router used before ``fit``
    ├── UnknownModelError            a model name outside the router's pool
    └── PersistenceError             save/load problems (missing files, version mismatch)
"""

from __future__ import annotations


class RoutingError(Exception):
    """Base class of every error raised by this toolkit."""


class DataError(RoutingError):
    """Input data cannot be used as given."""


class SchemaError(DataError):
    """A column is missing or has the wrong type."""


class ValidationError(DataError):
    """Values break a rule of the schema (range, uniqueness, known models)."""


class SourceNotFoundError(DataError):
    """A data source name or path does not resolve to readable data."""


class ContextWindowError(DataError, ValueError):
    """A prompt has more tokens than the context window of every model it may be routed to."""


class ConfigError(RoutingError, ValueError):
    """An argument or setting is invalid."""


class NotFittedError(RoutingError, RuntimeError):
    """An estimator was used before it was fitted."""


class UnknownModelError(RoutingError, KeyError):
    """A model name is not part of the pool."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class PersistenceError(RoutingError):
    """Saving or loading state failed."""

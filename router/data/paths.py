"""Where the public routing data lives: one setting, ``ROUTING_DATA_DIR``.

The data is never copied into the project. Code reads it from the directory named by the
environment variable ``ROUTING_DATA_DIR``; when that is unset, from ``../shared/data`` beside the
project checkout (found from this file's location, not from the working directory).

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> os.environ["ROUTING_DATA_DIR"], old = d, os.environ.get("ROUTING_DATA_DIR")
    >>> data_dir() == Path(d).resolve()
    True
    >>> _ = os.environ.pop("ROUTING_DATA_DIR") if old is None else os.environ.update(ROUTING_DATA_DIR=old)
"""

from __future__ import annotations

import os
from pathlib import Path

from router.errors import SourceNotFoundError

__all__ = ["ENV_VAR", "data_dir", "default_data_dir", "project_root"]

#: The environment variable that names the data directory.
ENV_VAR = "ROUTING_DATA_DIR"


def project_root() -> Path:
    """The checkout's root directory (the folder holding the ``router`` package)."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``../shared/data`` relative to the project root."""
    return project_root().parent / "shared" / "data"


def data_dir() -> Path:
    """The public-data directory: ``$ROUTING_DATA_DIR`` or :func:`default_data_dir`.

    Raises:
        SourceNotFoundError: the directory does not exist; the message says what to set.
    """
    value = os.environ.get(ENV_VAR)
    path = Path(value).expanduser().resolve() if value else default_data_dir()
    if not path.is_dir():
        origin = f"{ENV_VAR}={value!r}" if value else f"the default {path} ({ENV_VAR} is unset)"
        raise SourceNotFoundError(
            f"The routing data directory does not exist: {origin}. Set the environment variable "
            f"{ENV_VAR} to the folder holding the public routing data (e.g. export {ENV_VAR}=/path/to/shared/data), "
            "or pass an explicit path to the loader."
        )
    return path

"""The serving policy: load it, name its version, follow a registry alias and swap atomically.

``--model`` takes what ``python -m router route`` takes (:func:`router.registry_io.load_router`):

* a directory written by ``Router.save``: version ``sha256:<12 hex>``, a hash of its files;
* ``models:/NAME/3``: version ``NAME/3``;
* ``models:/NAME@ALIAS``: the alias is resolved to a version first and that exact version is loaded
  (version ``NAME/3``); :class:`AliasFollower` then polls the registry every ``poll_s`` seconds and,
  when the alias moves, loads and warms the new version in its own thread and swaps it in with a
  single reference assignment (:attr:`PolicyHolder.current`): requests in flight finish on the
  policy they started with, later ones use the new one, none waits for the load.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.errors import PersistenceError

__all__ = ["AliasFollower", "ModelSpec", "Policy", "PolicyHolder", "load_policy", "parse_spec"]

log = logging.getLogger("serve.registry")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model``: ``kind`` is ``dir``, ``alias``, ``version`` or ``runs``."""

    text: str
    kind: str
    name: str = ""
    alias: str = ""
    version: str = ""


@dataclass(frozen=True, eq=False)
class Policy:
    """A loaded router and the version every response and record names."""

    router: Any
    version: str
    source: str
    models: frozenset[str]
    loaded_at: float


class PolicyHolder:
    """Holds the serving :class:`Policy`; readers take ``holder.current`` once per decision batch."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy

    def swap(self, policy: Policy) -> Policy:
        """Make ``policy`` current (one reference assignment); returns the previous one."""
        old, self.current = self.current, policy
        return old


def parse_spec(text: str) -> ModelSpec:
    """Parse ``--model``; a ``models:/`` URI that is neither ``NAME@ALIAS`` nor ``NAME/N`` is an error.

    >>> parse_spec("models:/demo-router@champion")
    ModelSpec(text='models:/demo-router@champion', kind='alias', name='demo-router', alias='champion', version='')
    >>> parse_spec("out/router").kind
    'dir'
    """
    if text.startswith("runs:/"):
        return ModelSpec(text, "runs")
    if text.startswith("models:/"):
        m = _MODELS_URI.match(text)
        if m is None:
            raise PersistenceError(f"--model {text!r} is not a registry URI this service reads; "
                                   "use models:/NAME@ALIAS or models:/NAME/VERSION.")
        if m["alias"]:
            return ModelSpec(text, "alias", m["name"], alias=m["alias"])
        return ModelSpec(text, "version", m["name"], version=m["version"])
    return ModelSpec(text, "dir")


def directory_version(path: str | Path) -> str:
    """``sha256:<12 hex>`` over the file names and bytes of a saved router directory."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return "sha256:" + h.hexdigest()[:12]


def _client() -> Any:
    import mlflow

    from router.registry_io import registry_uri

    uri = registry_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve_alias(spec: ModelSpec, client: Any | None = None) -> str:
    """The version number ``NAME@ALIAS`` points at now."""
    import mlflow

    try:
        mv = (client or _client()).get_model_version_by_alias(spec.name, spec.alias)
    except mlflow.exceptions.MlflowException as exc:
        from router.registry_io import registry_uri

        raise PersistenceError(f"cannot resolve {spec.text} in the registry at {registry_uri()}: "
                               f"{str(exc).splitlines()[0]}; register the model and set the alias "
                               "(python -m training fit --register NAME, then training promote).") from None
    return str(mv.version)


def load_policy(spec: ModelSpec, *, version: str | None = None, warm: bool = True) -> Policy:
    """Load the router ``spec`` names (``version`` pins an alias to a resolved version) and warm it up."""
    from router.registry_io import load_router

    if spec.kind == "dir":
        path = Path(spec.text)
        if not path.is_dir():
            raise PersistenceError(f"--model {spec.text}: no such directory; give a directory written by "
                                   "`python -m training fit --out DIR` or models:/NAME@ALIAS.")
        router = load_router(path)
        ver = directory_version(path)
    elif spec.kind == "alias":
        number = version or resolve_alias(spec)
        router = load_router(f"models:/{spec.name}/{number}")
        ver = f"{spec.name}/{number}"
    elif spec.kind == "version":
        router = load_router(spec.text)
        ver = f"{spec.name}/{spec.version}"
    else:
        router = load_router(spec.text)
        ver = spec.text
    if warm:
        # the first call loads lazy parts (encoder weights, tokenizer); do it before any request waits
        router.route([[{"role": "user", "content": "warm up the router before serving"}]])
    return Policy(router, ver, spec.text, frozenset(router.models), time.time())


class AliasFollower:
    """Polls ``NAME@ALIAS`` every ``poll_s`` seconds; when it moves, loads, warms and swaps in a thread.

    ``on_swap(old, new)`` and ``on_error(message)`` are called from the follower thread; ``name``
    names the thread (the champion's and an experiment challenger's followers run side by side).
    """

    def __init__(self, spec: ModelSpec, holder: PolicyHolder, poll_s: float,
                 on_swap: Callable[[Policy, Policy], None] | None = None,
                 on_error: Callable[[str], None] | None = None, name: str = "alias-follower") -> None:
        if spec.kind != "alias":
            raise PersistenceError(f"only models:/NAME@ALIAS can be followed, not {spec.text}.")
        self.spec = spec
        self.holder = holder
        self.poll_s = poll_s
        self.on_swap = on_swap
        self.on_error = on_error
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: str | None = None  # version whose load failed; not retried until the alias moves again

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check_once(self, client: Any | None = None) -> bool:
        """Look at the alias now; True when a new version was swapped in."""
        number = resolve_alias(self.spec, client)
        current = self.holder.current.version
        target = f"{self.spec.name}/{number}"
        if target == current or number == self._failed:
            return False
        try:
            policy = load_policy(self.spec, version=number)
        except Exception as exc:  # a broken version must not stop serving the current one
            self._failed = number
            if self.on_error is not None:
                self.on_error(f"cannot load {target}: {exc}; still serving {current}")
            return False
        old = self.holder.swap(policy)
        log.info("%s: policy %s swapped in (was %s)", self.spec.text, policy.version, old.version)
        if self.on_swap is not None:
            self.on_swap(old, policy)
        return True

    def _run(self) -> None:
        client = None
        while not self._stop.wait(self.poll_s):
            try:
                client = client or _client()
                self.check_once(client)
            except Exception as exc:  # registry unreachable: keep serving, say so, try again
                if self.on_error is not None:
                    self.on_error(f"registry poll failed: {exc}")

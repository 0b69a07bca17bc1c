"""Every registered quality predictor and every registered policy passes the router conformance suite
inside a :class:`~router.router.Router` (discovered from the registries, not listed here)."""

from __future__ import annotations

import numpy as np
import pytest

from router import registry
from tests import conformance as cf

PREDICTOR_KINDS = registry.kinds("predictor")
POLICY_KINDS = registry.kinds("policy")
_TORCH = {"mlp", "matrix_factorization", "ensemble", "neural"}


def _marks(kind: str) -> list:
    return [pytest.mark.slow] if kind in _TORCH else []


def test_suite_covers_every_registered_component():
    assert {c.kind for c in cf.predictor_classes()} == set(PREDICTOR_KINDS)
    assert set(POLICY_KINDS) >= {"egreedy", "linucb", "thompson", "neural"}


@pytest.fixture(scope="module")
def routers():
    """One router per kind, built on first use and shared by the checks."""
    cache: dict[tuple[str, str], object] = {}

    def get(family: str, kind: str):
        if (family, kind) not in cache:
            cls = registry.get(family, kind)
            cache[family, kind] = cf.predictor_router(cls) if family == "predictor" else cf.policy_router(cls)
        return cache[family, kind]

    return get


CASES = [pytest.param("predictor", k, marks=_marks(k), id=f"predictor-{k}") for k in PREDICTOR_KINDS] + [
    pytest.param("policy", k, marks=_marks(k), id=f"policy-{k}") for k in POLICY_KINDS
]


@pytest.mark.parametrize("check", cf.ROUTER_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("family", "kind"), CASES)
def test_router_conformance(family, kind, check, routers, tmp_path):
    check(routers(family, kind), tmp_path)


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_router_seeded(family, kind):
    cls = registry.get(family, kind)
    cf.check_router_seeded(lambda seed: cf.predictor_router(cls, seed) if family == "predictor"
                           else cf.policy_router(cls, seed))


def test_router_saved_with_policy_settings_in_metadata_still_loads(tmp_path):
    """Routers written before the policy trade-off became a typed field kept it as metadata keys."""
    import json

    from router.router import Router

    r = cf.policy_router(registry.get("policy", "linucb"))
    r.save(tmp_path / "r")
    path = tmp_path / "r" / "router.json"
    meta = json.loads(path.read_text())
    assert meta["policy"] == {"lam": cf.ROUTER_LAM, "mu": 0.0}
    settings = meta.pop("policy")
    meta["metadata"].update(policy_lam=settings["lam"], policy_mu=settings["mu"])
    path.write_text(json.dumps(meta))
    old = Router.load(tmp_path / "r")
    assert (old.policy_lam, old.policy_mu) == (cf.ROUTER_LAM, 0.0) and "policy_lam" not in old.metadata
    for kwargs in ({}, {"lam": 5.0}):  # with an override the quality estimate uses policy_lam
        d_new, d_old = r.route(cf.ROUTE_PROMPTS, **kwargs), old.route(cf.ROUTE_PROMPTS, **kwargs)
        np.testing.assert_array_equal(d_new.quality, d_old.quality)
        np.testing.assert_array_equal(d_new.probabilities, d_old.probabilities)

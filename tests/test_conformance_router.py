"""Every registered quality predictor and every registered policy passes the router conformance suite
inside a :class:`~router.router.Router` (discovered from the registries, not listed here)."""

from __future__ import annotations

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

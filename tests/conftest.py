"""Fixtures shared by the service's end-to-end tests (one instance per test module)."""

from __future__ import annotations

import pytest
from serve_support import tiny_router


@pytest.fixture(scope="module")
def provider():
    """The local provider on a free loopback port (demo data, 5 ms latency); its base URL."""
    from serve.provider import running

    with running(data="demo", latency_ms=5) as url:
        yield url


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    """A small router trained on synthetic data, saved to a directory."""
    path = tmp_path_factory.mktemp("router")
    tiny_router(path)
    return path

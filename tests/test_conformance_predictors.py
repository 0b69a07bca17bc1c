"""Every quality predictor and encoder passes the conformance suite (discovered automatically)."""

from __future__ import annotations

import pytest

from router.encoders import (
    ENCODERS,
    EmbeddingCache,
    HashingEncoder,
    SentenceTransformerEncoder,
    StaticEncoder,
)
from router.predictors import PREDICTORS
from tests import conformance as cf

PREDICTOR_CLASSES = cf.predictor_classes()


def test_discovery_finds_every_predictor_and_encoder():
    assert {c.kind for c in PREDICTOR_CLASSES} == set(PREDICTORS)
    assert len(PREDICTOR_CLASSES) >= 4
    assert {c.kind for c in cf.encoder_classes()} == set(ENCODERS)


@pytest.mark.parametrize("check", cf.PREDICTOR_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", PREDICTOR_CLASSES, ids=lambda c: c.__name__)
def test_predictor_conformance(cls, check):
    check(cls)


@pytest.mark.parametrize("cls", PREDICTOR_CLASSES, ids=lambda c: c.__name__)
def test_predictor_roundtrip(cls, tmp_path):
    cf.check_predictor_roundtrip(cls, tmp_path)


FAST_ENCODERS = {
    "hashing": lambda tmp: HashingEncoder(dim=64),
    "cached": lambda tmp: EmbeddingCache(HashingEncoder(dim=32, seed=3), path=str(tmp / "cache")),
}
SLOW_ENCODERS = {
    "sentence_transformer": lambda tmp: SentenceTransformerEncoder(),
    "static": lambda tmp: StaticEncoder(pca_dims=64),
}


def test_every_encoder_has_a_conformance_case():
    assert set(FAST_ENCODERS) | set(SLOW_ENCODERS) == {c.kind for c in cf.encoder_classes()}


@pytest.mark.parametrize("kind", sorted(FAST_ENCODERS))
def test_encoder_conformance_fast(kind, tmp_path):
    cf.check_encoder(FAST_ENCODERS[kind](tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SLOW_ENCODERS))
def test_encoder_conformance_model(kind, tmp_path):
    cf.check_encoder(SLOW_ENCODERS[kind](tmp_path))

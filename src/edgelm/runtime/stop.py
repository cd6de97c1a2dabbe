"""Stopping a sequence: end-of-generation tokens, stop strings and max_tokens.

Text reaches the user as deltas. A stop string may arrive split over several tokens, so the filter holds
back the longest tail of the text that could still grow into a stop string, and releases it as soon as it
cannot. When a stop string completes, the text before it is released and the rest is dropped: no part of
a stop string is ever shown.

When several stop strings could match, the one that *completes first* wins (then the one starting first).
That is what a token-by-token stream sees, and it makes the result independent of how the text is split
into deltas.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import Final

from edgelm.runtime.sampling import InvalidParamError

__all__ = ["FinishReason", "StopChecker", "StopStringFilter", "eog_ban", "normalize_stop"]


class FinishReason(str, enum.Enum):
    """Why a sequence ended, spelled as in the OpenAI API."""

    STOP = "stop"  # an end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens reached


def normalize_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """`stop` as a tuple of distinct non-empty strings (one string alone is one stop string)."""
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, str) else tuple(stop)
    for s in items:
        if not isinstance(s, str) or not s:
            raise InvalidParamError("stop", stop, "stop strings must be non-empty strings")
    return tuple(dict.fromkeys(items))


def eog_ban(eog_ids: Collection[int]) -> dict[int, float]:
    """A logit bias that bans the end-of-generation tokens (`ignore_eos`, or until a minimum length):
    merge it into `SamplingParams.logit_bias`."""
    return dict.fromkeys(eog_ids, float("-inf"))


class StopStringFilter:
    """Feeds on decoded text deltas; returns the part that is safe to show now.

    `stopped` turns True once a stop string completes (`matched` says which); after that `feed` returns "".
    Call `flush` when generation ends for another reason to release the held-back tail.
    """

    def __init__(self, stop: str | Sequence[str] | None) -> None:
        self.stops: Final = normalize_stop(stop)
        # Proper prefixes of the stop strings: a text ending in one of them must wait for more.
        self._prefixes = frozenset(s[:i] for s in self.stops for i in range(1, len(s)))
        self._max_hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None

    @property
    def pending(self) -> str:
        """The held-back text: a proper prefix of some stop string, or ""."""
        return self._pending

    def feed(self, delta: str) -> str:
        """Takes the next piece of decoded text; returns the text that can be shown now."""
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        text = self._pending + delta
        # No stop string lies wholly in the old pending text (it would have matched already) and every
        # stop string in progress starts inside it, so searching `text` finds the first to complete.
        best_end, best_start, best = -1, -1, ""
        for s in self.stops:
            start = text.find(s)
            if start >= 0:
                end = start + len(s)
                if best_end < 0 or end < best_end or (end == best_end and start < best_start):
                    best_end, best_start, best = end, start, s
        if best_end >= 0:
            self.stopped, self.matched, self._pending = True, best, ""
            return text[:best_start]
        hold = self._hold(text)
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Releases the held-back text: call when generation ends without a stop string."""
        out, self._pending = self._pending, ""
        return out

    def _hold(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        for n in range(min(len(text), self._max_hold), 0, -1):
            if text[-n:] in self._prefixes:
                return n
        return 0


class StopChecker:
    """Decides when one sequence is done: an end-of-generation token, a stop string, or max_tokens.

    Per generated token call `accept(token_id, text)` with the token's decoded text (skip decoding for an
    end-of-generation token: `is_eog`); it returns the text to show now and sets `finish_reason` once the
    sequence is done. `max_tokens=None` means no limit; 0 means done before the first token.
    """

    def __init__(
        self,
        *,
        eog_ids: Collection[int] = (),
        stop: str | Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0
        ):
            raise InvalidParamError("max_tokens", max_tokens, "must be an integer >= 0 or None")
        self.eog_ids: Final = frozenset(eog_ids)
        self.max_tokens: Final = max_tokens
        self.filter: Final = StopStringFilter(stop)
        self.n_tokens = 0
        self.finish_reason: FinishReason | None = FinishReason.LENGTH if max_tokens == 0 else None
        self.stop_token: int | None = None  # the end-of-generation token that ended the sequence
        self.stop_string: str | None = None  # the stop string that ended it

    @property
    def done(self) -> bool:
        """True once the sequence must not generate another token."""
        return self.finish_reason is not None

    def is_eog(self, token_id: int) -> bool:
        """Whether `token_id` ends generation (its text is never shown)."""
        return token_id in self.eog_ids

    def accept(self, token_id: int, text: str = "") -> str:
        """Counts one generated token with its decoded `text`; returns the text that can be shown now."""
        if self.finish_reason is not None:
            return ""
        self.n_tokens += 1
        if token_id in self.eog_ids:
            self.finish_reason, self.stop_token = FinishReason.STOP, token_id
            return self.filter.flush()
        out = self.filter.feed(text)
        if self.filter.stopped:
            self.finish_reason, self.stop_string = FinishReason.STOP, self.filter.matched
        elif self.max_tokens is not None and self.n_tokens >= self.max_tokens:
            self.finish_reason = FinishReason.LENGTH
            out += self.filter.flush()
        return out

    def finish(self, reason: FinishReason = FinishReason.LENGTH) -> str:
        """Ends the sequence from outside (context full, cancelled) unless already done; returns the
        held-back text."""
        if self.finish_reason is None:
            self.finish_reason = reason
            return self.filter.flush()
        return ""

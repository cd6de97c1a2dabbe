"""The shortest way to close a grammar: a greedy byte search over a byte-level matcher.

The grammar processor forces such a plan when a sequence's token budget runs low, and checks candidate
tokens against it near the end of the budget (runtime/grammar.py).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    import llguidance

__all__ = ["JsonScan", "shortest_completion"]

_MAX_PLAN_BYTES: Final = 2048

# The order in which the shortest-completion search tries bytes: closing brackets, a separator, the
# shortest value (a digit), a quote, then longer values and the rest; a backslash (an escape) last.
_FIRST_BYTES: Final = b'}],0123456789":[{-.' + bytes(range(ord("a"), ord("z") + 1))
_BYTE_ORDER: Final = np.array(  # every byte but 0xFF (llguidance's special-token marker, never in UTF-8)
    [b for b in dict.fromkeys((*_FIRST_BYTES, *range(0x21, 0x7F), *b" \n\t\r", *range(0xFF))) if b != 0x5C]
    + [0x5C],
    dtype=np.intp,
)
_QUOTE, _BACKSLASH = 0x22, 0x5C
_STRUCTURAL: Final = frozenset(b'}]",:[{')  # JSON outside strings: always a step towards the end


class JsonScan(enum.IntEnum):
    """Where a byte of JSON text is: outside strings, inside one, or just after a backslash in one."""

    OUTSIDE = 0
    INSIDE = 1
    ESCAPED = 2

    def after(self, data: bytes) -> JsonScan:
        state = self
        for b in data:
            if state is JsonScan.ESCAPED:
                state = JsonScan.INSIDE
            elif state is JsonScan.INSIDE:
                if b == _BACKSLASH:
                    state = JsonScan.ESCAPED
                elif b == _QUOTE:
                    state = JsonScan.OUTSIDE
            elif b == _QUOTE:
                state = JsonScan.INSIDE
        return state


def shortest_completion(
    matcher: llguidance.LLMatcher, json_state: JsonScan | None = None, limit: int = _MAX_PLAN_BYTES
) -> bytes | None:
    """A short byte string that brings a byte-level matcher (consumed by this) to an accepting state.

    Greedy: at each step the first byte, in `_BYTE_ORDER`, that makes progress: one that changes the set
    of allowed next bytes (a letter inside a string does not) by a move not made before from the same set
    (so `(ab)+c` ends in `c`), or, for JSON (`json_state` says whether the text so far ends inside a
    string), a quote, or outside strings a bracket, comma or colon (closing nested arrays leaves the set
    alike). If no byte does (a string below its minLength), the first one. None if nothing is found
    within `limit` bytes.
    """
    out = bytearray()
    mask = matcher.compute_bitmask()
    state = json_state
    moves: set[tuple[bytes, int]] = set()  # (allowed set, byte) steps taken so far
    stuck: set[tuple[bytes, JsonScan | None]] = set()  # where no byte made progress
    for _ in range(limit):
        if matcher.is_accepting():
            return bytes(out)
        if matcher.is_error() or matcher.is_stopped():
            return None
        bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little")
        candidates = _BYTE_ORDER[bits[_BYTE_ORDER] == 1].tolist()
        if not candidates:
            return None
        choice = -1
        if (mask, state) not in stuck:
            for b in candidates:
                if b == _BACKSLASH:
                    continue  # an escape leads to new masks, never towards the end
                matcher.consume_token(b)
                new = matcher.compute_bitmask()
                structural = (state is JsonScan.OUTSIDE and b in _STRUCTURAL) or (
                    state is JsonScan.INSIDE and b == _QUOTE
                )
                # A UTF-8 lead byte changes the mask (a continuation byte must follow): no progress.
                fresh = new != mask and (mask, b) not in moves
                if structural or (b < 0x80 and fresh) or matcher.is_accepting():
                    moves.add((mask, b))
                    choice, mask = b, new
                    break
                matcher.rollback(1)
            else:
                stuck.add((mask, state))
        if choice < 0:
            choice = candidates[0]
            matcher.consume_token(choice)
            mask = matcher.compute_bitmask()
        out.append(choice)
        if state is not None:
            state = state.after(bytes((choice,)))
    return None

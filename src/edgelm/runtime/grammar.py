"""Constrained decoding: a JSON Schema or a regex compiled by llguidance, applied as a logits processor.

`Grammar.json_schema(schema, tokenizer)` compiles once per request shape; `grammar.processor()` starts a
`GrammarProcessor` (a `LogitsProcessor`) for one sequence from a copy of the compiled matcher. Each call
feeds the matcher the tokens sampled since the previous call, then writes `-inf` into the logits of every
token whose bit is 0 in llguidance's next-token bitmask. A matcher error (a token the grammar rejects, a
parser limit) is kept in `processor.error` and from then on only end-of-generation tokens stay allowed:
nothing is raised from inside the decode loop.

Whitespace: JSON may carry, between two lexemes, nothing, one space, or a newline and up to 20 spaces or
tabs (llama.cpp's `space` rule): pretty-printed output stays possible, a model cannot loop on white space.
`compact=True` allows no white space at all.

Termination within a token budget: pass `processor(max_tokens=n)`, the tokens the sequence may still
generate (`min(max_tokens, n_ctx - len(prompt))`). The processor keeps the shortest way to finish in
view: every few tokens, and at every token once the budget gets close, it searches the shortest byte
string that completes the grammar (`shortest_completion`, on a byte-level twin of the matcher) and
tokenizes it: the plan. When the budget left is within plan + margin + zone, tokens that could open a
new object, array or item are banned, so the plan cannot suddenly grow; within plan + 1 + margin, the
plan is forced token by token, then an end-of-generation token. The output is complete and valid, with
`finish_reason == "stop"`, at any temperature, with random weights. Nothing is imposed on the schema (no
hidden maxLength or maxItems): strings and arrays are cut short only when the budget runs out. Limits:
a budget below `grammar.min_tokens() + 1` cannot be met (the output is cut, "length"); the search is a
greedy heuristic, so a pathological pattern may not be closed, and then nothing is forced.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import numpy as np

from edgelm.errors import EdgelmError
from edgelm.runtime.closing import JsonScan, shortest_completion
from edgelm.runtime.sampling import InvalidParamError
from edgelm.tokenizer import Tokenizer
from edgelm.tokenizer.vocab import TokenAttr

try:
    import llguidance
except ImportError as e:  # pragma: no cover - the server extra brings it
    raise ImportError("constrained decoding needs llguidance: pip install 'edgelm[server]'") from e

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["Grammar", "GrammarError", "GrammarProcessor", "shortest_completion"]

# llama.cpp's json-schema-to-grammar `space` rule: bounded, so white space cannot run away.
JSON_WHITESPACE: Final = r"(?:[ ]|\n[ \t]{0,20})?"
_NEG_INF: Final = np.float32(-np.inf)
# Per byte of the packed bitmask, what each of its 8 tokens adds to its logit: 0 if allowed, -inf if not.
_PENALTY: Final = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(bool),
    np.float32(0.0),
    _NEG_INF,
).astype(np.float32)  # (256, 8)

# Budget (in tokens): the shortest completion (`plan`) is searched every CHECK_EVERY tokens, and at every
# token once the budget left is <= 2 * plan + 1 + MARGIN + zone + CHECK_EVERY. Within plan + 1 + MARGIN +
# zone, tokens that could open new JSON structure are banned, and of the LOOKAHEAD most likely tokens only
# those after which the plan still fits are kept (so the plan cannot outgrow the budget); within
# plan + 1 + MARGIN, the plan is forced. The zone starts at ZONE and grows to the largest
# growth of the plan seen between two searches.
_CHECK_EVERY: Final = 8
_MARGIN: Final = 8
_ZONE: Final = 24
_LOOKAHEAD: Final = 4  # candidates checked per token near the end of the budget


class GrammarError(EdgelmError, ValueError):
    """A schema, regex or grammar that cannot be used; `field` names it, `detail` says why."""

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


# ---------------------------------------------------------------------------------------------------------
# The vocabulary as llguidance sees it: built once per Tokenizer.


class _TokenizerWrapper:
    """llguidance's TokenizerWrapper protocol: token bytes, EOS, special ids and an encode callback."""

    is_tokenizer_wrapper = True

    def __init__(self, vocab: _Vocab, special: list[int], eos: int | None, bos: int | None) -> None:
        self.tokens = vocab.pieces
        self.eos_token_id = eos
        self.bos_token_id = bos
        self.special_token_ids = special
        self._vocab = weakref.ref(vocab)  # the vocab holds the llguidance tokenizer, which holds this

    def __call__(self, text: str | bytes) -> list[int]:
        vocab = self._vocab()
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        ids = None if vocab is None else vocab.encode(data)
        return [] if ids is None else ids


class _Vocab:
    """One tokenizer's llguidance tokenizer, token bytes and end-of-generation ids."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        n = tokenizer.vocab_size
        self.pieces = [tokenizer.token_to_piece(i, special=True) for i in range(n)]
        attrs = tokenizer.vocab.attrs
        # Control tokens, and user-defined ones that look like them ("<tool_call>"), are never grammar
        # text (as in llguidance's llama.cpp binding); neither are the end-of-generation tokens.
        special = set(np.flatnonzero(attrs & (TokenAttr.CONTROL | TokenAttr.UNKNOWN)).tolist())
        for i in np.flatnonzero(attrs & TokenAttr.USER_DEFINED).tolist():
            if self.pieces[i].startswith(b"<") and self.pieces[i].endswith(b">"):
                special.add(i)
        eog = set(tokenizer.eog_ids)
        special |= eog
        eos = tokenizer.eos_id if tokenizer.eos_id is not None else min(eog, default=None)
        self._tokenizer = weakref.ref(tokenizer)
        self.special = frozenset(special)
        self.byte_tokens: dict[int, int] = {}  # byte -> a token that is just that byte
        for i, p in enumerate(self.pieces):
            if len(p) == 1 and i not in self.special:
                self.byte_tokens.setdefault(p[0], i)
        # -inf for tokens that can open new JSON structure, 0 elsewhere, float32 (V,): outside strings,
        # those with `{`, `[` or `,`; inside one, those with a quote followed by one of them.
        self.opening_ban = [_ban(self.pieces, rb"[{\[,]"), _ban(self.pieces, rb'"[^{\[,]*[{\[,]')]
        self._greedy: Callable[[str], list[int]] | None = None
        wrapper = _TokenizerWrapper(self, sorted(special), eos, tokenizer.bos_id)
        self.ll = llguidance.LLTokenizer(wrapper)
        self._greedy = self.ll.greedy_tokenize
        self.eos: int = self.ll.eos_token
        eog.add(self.eos)
        self.eog = np.array(sorted(t for t in eog if t < n), dtype=np.int64)
        self.eog_set = frozenset(self.eog.tolist())
        self.n_words = (self.ll.vocab_size + 31) // 32

    def encode(self, data: bytes) -> list[int] | None:
        """Token ids whose bytes are exactly `data`, None if the vocab cannot spell it.

        Leading bytes that continue a UTF-8 character (the text so far may end inside one) are byte
        tokens; the rest is llguidance's greedy longest match (fast), else the tokenizer's encoding if
        its bytes match (an SPM vocab adds a leading space), else one token per byte.
        """
        table = self.byte_tokens
        for head in range(min(len(data), 4)):
            try:
                text = data[head:].decode("utf-8")
            except UnicodeDecodeError:
                continue
            tokenizer = self._tokenizer()
            tried = [self._greedy(text)] if self._greedy is not None else []  # fast, and as short
            tried += [tokenizer.encode(text, add_special=False)] if tokenizer is not None else []
            for ids in tried:
                if ids and all(b in table for b in data[:head]) and self.spell(ids) == data[head:]:
                    return [*(table[b] for b in data[:head]), *ids]
            break
        singles = [table.get(b) for b in data]
        return None if None in singles else singles  # type: ignore[return-value]

    def spell(self, ids: list[int]) -> bytes | None:
        """The bytes of `ids`; None if one is out of range."""
        n = len(self.pieces)
        return None if any(i >= n for i in ids) else b"".join(self.pieces[i] for i in ids)


def _ban(pieces: list[bytes], pattern: bytes) -> np.ndarray:
    """float32 (V,): -inf for the tokens whose bytes contain `pattern`, 0 for the others."""
    found = re.compile(pattern).search
    return np.array([_NEG_INF if found(p) else 0.0 for p in pieces], dtype=np.float32)


_VOCABS: weakref.WeakKeyDictionary[Tokenizer, _Vocab] = weakref.WeakKeyDictionary()
_VOCABS_LOCK = threading.Lock()


def _vocab(tokenizer: Tokenizer) -> _Vocab:
    with _VOCABS_LOCK:
        vocab = _VOCABS.get(tokenizer)
        if vocab is None:
            vocab = _VOCABS[tokenizer] = _Vocab(tokenizer)
        return vocab


@functools.cache
def _byte_tokenizer() -> llguidance.LLTokenizer:
    """llguidance's one-token-per-byte vocabulary (bytes 0..254, then special tokens and EOS)."""
    return llguidance.LLTokenizer("byte")


# ---------------------------------------------------------------------------------------------------------
# Grammar: compiled once, copied per sequence.


def _to_json(value: object) -> object:
    """`json.dumps` hook: any Mapping is an object."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class Grammar:
    """A compiled grammar for one tokenizer; `processor()` starts a matcher for one sequence."""

    def __init__(self, source: str, tokenizer: Tokenizer, field: str, *, is_json: bool = False) -> None:
        """`source`: an llguidance grammar (see the classmethods); bad grammars raise GrammarError.
        `is_json`: its text is JSON (the shortest-completion search then knows strings from structure)."""
        self.source = source
        self.field = field
        self.is_json = is_json
        self._vocab = _vocab(tokenizer)
        self._matcher = llguidance.LLMatcher(self._vocab.ll, source, log_level=0)
        if self._matcher.is_error():
            raise GrammarError(field, _clean(self._matcher.get_error()))
        self._bytes_matcher: llguidance.LLMatcher | None = None
        self._min_tokens: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def json_schema(
        cls,
        schema: Mapping[str, object] | None,
        tokenizer: Tokenizer,
        *,
        field: str = "json_schema",
        compact: bool = False,
    ) -> Grammar:
        """JSON that validates against `schema`; None: any JSON object. `field` names the schema in
        errors (e.g. "response_format.json_schema.schema"); `compact`: no white space at all."""
        if schema is None:
            schema = {"type": "object"}
        if not isinstance(schema, Mapping):
            raise GrammarError(field, f"a JSON Schema must be an object, not {type(schema).__name__}")
        try:
            text = json.dumps(dict(schema), allow_nan=False, default=_to_json)
        except (TypeError, ValueError) as e:
            raise GrammarError(field, f"not JSON: {e}") from None
        options: JsonCompileOptions = (
            {"whitespace_flexible": False} if compact else {"whitespace_pattern": JSON_WHITESPACE}
        )
        try:
            source = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=options)
        except ValueError as e:
            raise GrammarError(field, str(e)) from None
        return cls(source, tokenizer, field, is_json=True)

    @classmethod
    def regex(cls, pattern: str, tokenizer: Tokenizer, *, field: str = "regex") -> Grammar:
        """Text that matches `pattern` (Rust regex syntax) entirely."""
        if not isinstance(pattern, str):
            raise GrammarError(field, f"a regex must be a string, not {type(pattern).__name__}")
        return cls(llguidance.LLMatcher.grammar_from_regex(pattern), tokenizer, field)

    @classmethod
    def lark(cls, source: str, tokenizer: Tokenizer, *, field: str = "grammar") -> Grammar:
        """Text of a context-free grammar in llguidance's Lark syntax (`start: ...`; GBNF-style rules
        with `::=` are accepted too, as llguidance reads them)."""
        if not isinstance(source, str):
            raise GrammarError(field, f"a grammar must be a string, not {type(source).__name__}")
        text = llguidance.LLMatcher.grammar_from_lark(source)
        problem = llguidance.LLMatcher.validate_grammar(text)
        if problem:
            raise GrammarError(field, _clean(problem))
        return cls(text, tokenizer, field)

    @property
    def vocab_size(self) -> int:
        """Tokens the bitmask covers; logits past it are banned."""
        return int(self._vocab.ll.vocab_size)

    def processor(self, max_tokens: int | None = None) -> GrammarProcessor:
        """A fresh processor for one sequence. `max_tokens`: the tokens this sequence may still generate;
        with it, the processor closes the grammar before the budget runs out."""
        with self._lock:
            matcher = self._matcher.deep_copy()
        return GrammarProcessor(self, matcher, max_tokens)

    def min_tokens(self) -> int | None:
        """Tokens of the shortest output the closing search finds from the start (end-of-generation not
        counted), None if it finds none: a budget below this + 1 cannot end in a complete output."""
        if self._min_tokens is None:
            plan = shortest_completion(self._byte_matcher(), JsonScan.OUTSIDE if self.is_json else None)
            ids = None if plan is None else self._vocab.encode(plan)
            self._min_tokens = -1 if ids is None else len(ids)
        return None if self._min_tokens < 0 else self._min_tokens

    def _byte_matcher(self) -> llguidance.LLMatcher:
        """A fresh matcher of the same grammar over single bytes (for the shortest-completion search)."""
        with self._lock:
            if self._bytes_matcher is None:
                self._bytes_matcher = llguidance.LLMatcher(_byte_tokenizer(), self.source, log_level=0)
            return self._bytes_matcher.deep_copy()

    def __repr__(self) -> str:
        return f"Grammar({self.field}, {len(self.source)} chars)"


def _clean(message: str) -> str:
    """llguidance's error text without its trailing parser dump."""
    return message.split("\n<state>")[0].strip()


# ---------------------------------------------------------------------------------------------------------
# The processor.


class GrammarProcessor:
    """A `LogitsProcessor` `(history, logits) -> logits` that keeps one sequence inside a grammar.

    The first call records `len(history)` as the prompt length; later calls first feed the matcher the
    tokens appended since, then mask the logits. `error` is None until the matcher fails; from then on
    only end-of-generation tokens are allowed. `__call__` never raises.
    """

    def __init__(self, grammar: Grammar, matcher: llguidance.LLMatcher, max_tokens: int | None) -> None:
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1
        ):
            raise InvalidParamError("max_tokens", max_tokens, "must be a positive integer or None")
        self.grammar = grammar
        self.max_tokens = max_tokens
        self.error: str | None = None
        self._vocab = grammar._vocab
        self._matcher = matcher
        self._words = np.full(self._vocab.n_words, -1, dtype=np.int32)  # (W,) llguidance's bitmask
        self._penalty = np.empty((4 * self._vocab.n_words, 8), dtype=np.float32)  # (4W, 8) -> (32W,)
        self._eos_word, self._eos_bit = divmod(self._vocab.eos, 32)
        self._prompt_len = -1
        self._n_seen = 0
        self._generated: list[int] = []
        self._bytes: llguidance.LLMatcher | None = None  # byte-level twin, made on the first search
        self._scan = JsonScan.OUTSIDE  # where the twin's text ends (for JSON)
        self._plan: list[int] | None = None  # forced tokens that complete the grammar
        self._plan_pos = 0
        self._hint: list[int] | None = None  # the latest shortest completion, not forced
        self._hint_left = 0  # the budget left when it was found
        self._zone = _ZONE
        self._next_check = max_tokens if max_tokens is not None else -1  # budget left that triggers a search

    # -- state -----------------------------------------------------------------------------------

    def is_accepting(self) -> bool:
        """Whether the text so far is complete (end of generation allowed)."""
        return self.error is None and self._matcher.is_accepting()

    @property
    def forcing(self) -> bool:
        """Whether the budget ran low and the processor is closing the grammar."""
        return self._plan is not None

    # -- the loop --------------------------------------------------------------------------------

    def __call__(self, history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        try:
            n = len(history)
            if self._prompt_len < 0:
                self._prompt_len = self._n_seen = n
            elif n != self._n_seen:
                self._sync(history, n)
            if self.error is None and self._matcher.is_error():
                self.error = _clean(self._matcher.get_error())
            if self.error is not None:
                return self._only(logits, self._vocab.eog)
            if self.max_tokens is None:
                return self._mask(logits)
            left = self.max_tokens - len(self._generated)
            forced = self._budget(left)
            if forced is not None:
                return forced(logits)
            logits = self._mask(logits)
            hint = self._hint
            if hint and self.grammar.is_json and left <= len(hint) + 1 + _MARGIN + self._zone:
                self._wind_down(logits, hint[0])
                self._keep_fitting(logits, left)
            return logits
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # never raise from the decode loop (a Rust panic is a BaseException)
            self.error = f"grammar processor failed: {e!r}"
            try:
                return self._only(logits, self._vocab.eog)
            except Exception:
                return logits

    def _sync(self, history: np.ndarray, n: int) -> None:
        """Feed the tokens appended since the last call (roll back if the history got shorter)."""
        if n < self._n_seen:
            back = self._n_seen - max(n, self._prompt_len)
            if back and not self._matcher.rollback(back):
                self.error = "cannot roll the grammar back"
            del self._generated[len(self._generated) - back :]
            self._bytes = None  # rebuilt from the generated tokens when needed
            self._plan = self._hint = None
            self._next_check = self.max_tokens if self.max_tokens is not None else -1
            self._n_seen = n
            return
        new = np.asarray(history[self._n_seen : n]).tolist()
        self._n_seen = n
        for tok in new:
            self._feed(int(tok))

    def _feed(self, tok: int) -> None:
        vocab = self._vocab
        self._generated.append(tok)
        grammar_tok = vocab.eos if tok in vocab.eog_set else tok
        if not self._matcher.consume_token(grammar_tok):
            self.error = _clean(self._matcher.get_error()) or f"token {tok} rejected by the grammar"
            return
        if self._bytes is not None and grammar_tok != vocab.eos:
            piece = vocab.pieces[tok] if tok < len(vocab.pieces) else b""
            if not self._bytes.consume_tokens(list(piece)):
                self._bytes = None  # should not happen: the twin is only a search aid
            self._scan = self._scan.after(piece)
        if self._plan is not None:
            if self._plan_pos < len(self._plan) and tok == self._plan[self._plan_pos]:
                self._plan_pos += 1
            else:
                self._plan = None
                self._next_check = self.max_tokens or 0  # search again at once

    def _mask(self, logits: np.ndarray) -> np.ndarray:
        """Ban the tokens the grammar forbids, in place; the EOS bit admits every end-of-generation id."""
        m = self._matcher
        if m.is_stopped():  # complete, nothing can follow
            return self._only(logits, self._vocab.eog)
        words = self._words
        m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        if m.is_error():
            self.error = _clean(m.get_error())
            return self._only(logits, self._vocab.eog)
        eog = self._vocab.eog
        eog_logits = logits[eog]  # (n_eog,)
        np.take(_PENALTY, words.view(np.uint8), axis=0, out=self._penalty)
        penalty = self._penalty.reshape(-1)
        n = min(logits.shape[0], penalty.shape[0])
        np.add(logits[:n], penalty[:n], out=logits[:n])
        logits[n:] = _NEG_INF
        if (int(words[self._eos_word]) >> self._eos_bit) & 1:
            logits[eog] = eog_logits
        return logits

    @staticmethod
    def _only(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Ban every token but `ids`, in place; a kept id whose logit was -inf gets 0 (drawable)."""
        kept = logits[ids]
        kept[~np.isfinite(kept)] = 0.0
        logits.fill(_NEG_INF)
        logits[ids] = kept
        return logits

    # -- the budget ------------------------------------------------------------------------------

    def _budget(self, left: int) -> functools.partial[np.ndarray] | None:
        """With `left` tokens still allowed (this one included): None to sample freely, else a function
        that forces the next token of the closing plan (or end of generation after it)."""
        if self._plan is None and left <= self._next_check:
            plan = self._closing_plan()
            if plan is None:
                self._hint = None
                self._next_check = left - _CHECK_EVERY
            else:
                k = len(plan)
                if self._hint is not None:  # how much the plan grew beyond the tokens spent since
                    self._zone = max(self._zone, k - len(self._hint) + self._hint_left - left)
                self._hint, self._hint_left = plan, left
                if k + 1 + _MARGIN >= left:
                    self._plan, self._plan_pos = plan, 0
                else:
                    window = 2 * k + 1 + _MARGIN + self._zone + _CHECK_EVERY
                    self._next_check = max(left - _CHECK_EVERY, min(left - 1, window))
        if self._plan is None:
            return None
        if self._plan_pos < len(self._plan):
            tok = self._plan[self._plan_pos]
            if self._matcher.validate_tokens([tok]) == 1:
                return functools.partial(self._only, ids=np.array([tok], dtype=np.int64))
        elif self._matcher.is_accepting():
            return functools.partial(self._only, ids=self._vocab.eog)
        self._plan = None  # the plan no longer fits the matcher: search again next token
        self._next_check = left - 1
        return None

    def _wind_down(self, logits: np.ndarray, keep: int) -> None:
        """Near the end of the budget, ban tokens that could open an object, an array or a next item
        (outside a string: any with `{`, `[` or `,`; inside: those that close it first), but `keep`."""
        ban = self._vocab.opening_ban[self._scan is not JsonScan.OUTSIDE]
        kept = logits[keep]
        n = min(logits.shape[0], ban.shape[0])
        np.add(logits[:n], ban[:n], out=logits[:n])
        logits[keep] = kept

    def _keep_fitting(self, logits: np.ndarray, left: int) -> None:
        """Near the end of the budget, keep only the LOOKAHEAD most likely tokens after which a complete
        output (and its end of generation) still fits in the budget, in place. Choosing between
        alternatives (an `anyOf` branch, a longer enum value) can grow the closing plan by more than
        MARGIN in one token, which no opening-token ban prevents. If none fits, nothing changes here
        (the plan, forced at the next token, is the last resort)."""
        if self._bytes is None:
            return
        finite = np.flatnonzero(np.isfinite(logits))
        if finite.size <= 1:
            return
        top = finite[np.argsort(-logits[finite], kind="stable")[:_LOOKAHEAD]]
        hint = self._hint
        # The plan's own next token fits when the plan does (no search needed).
        follows = hint[0] if hint and len(hint) + 1 <= left else -1
        keep = [int(t) for t in top if t == follows or self._completion_fits(int(t), left - 1)]
        if keep:
            self._only(logits, np.array(keep, dtype=np.int64))

    def _completion_fits(self, tok: int, left_after: int) -> bool:
        """Whether, after `tok`, a complete output and its end of generation fit in `left_after` tokens."""
        vocab = self._vocab
        if tok in vocab.eog_set:
            return self._matcher.is_accepting()
        assert self._bytes is not None
        piece = vocab.pieces[tok] if tok < len(vocab.pieces) else b""
        twin = self._bytes.deep_copy()
        if not twin.consume_tokens(list(piece)):
            return False
        ids = self._encoded_plan(twin, self._scan.after(piece))
        return ids is not None and len(ids) + 1 <= left_after

    def _encoded_plan(self, twin: llguidance.LLMatcher, scan: JsonScan) -> list[int] | None:
        """The tokens of the shortest completion from a byte-level matcher (consumed by this) whose
        text ends at `scan`."""
        plan = shortest_completion(twin, scan if self.grammar.is_json else None)
        return None if plan is None else self._vocab.encode(plan)

    def _closing_plan(self) -> list[int] | None:
        """Tokens that complete the grammar from here, as few as the greedy byte search finds."""
        if self._bytes is None:
            twin = self.grammar._byte_matcher()
            pieces = self._vocab.pieces
            data = b"".join(pieces[t] for t in self._generated if t not in self._vocab.eog_set)
            if data and not twin.consume_tokens(list(data)):
                return None
            self._bytes, self._scan = twin, JsonScan.OUTSIDE.after(data)
        ids = self._encoded_plan(self._bytes.deep_copy(), self._scan)
        if ids is None or self._matcher.validate_tokens(ids) != len(ids):
            return None
        return ids

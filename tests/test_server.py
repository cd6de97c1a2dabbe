"""The OpenAI-compatible server in process (Starlette's TestClient): shapes, streams, errors, metrics,
auth, overload, loading, prefix reuse; and on a real uvicorn server: client disconnects cancel."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import edgelm
from edgelm.runtime.engine import Engine, Request
from edgelm.runtime.sampling import SamplingParams
from edgelm.server import BackgroundServer, create_app
from edgelm.server.tools import could_be_tool_call, parse_tool_calls

N_CTX = 1024
TIMINGS_KEYS = {"prompt_tokens", "cached_prompt_tokens", "prompt_ms", "ttft_ms", "decode_tokens_per_s"}
HI = [{"role": "user", "content": "hi"}]
needs_grammar = pytest.mark.skipif(
    importlib.util.find_spec("edgelm.runtime.grammar") is None, reason="edgelm.runtime.grammar not there"
)


@pytest.fixture(scope="module")
def model(tiny_model) -> edgelm.Model:
    return edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=N_CTX)


def _started(client: TestClient) -> TestClient:
    assert client.app.state.edgelm.wait_loaded(30)  # type: ignore[attr-defined]
    return client


@pytest.fixture(scope="module")
def client(model) -> Iterator[TestClient]:
    with TestClient(create_app(model, n_slots=2, model_name="tiny")) as c:
        yield _started(c)


def engine_of(client: TestClient) -> Engine:
    engine = client.app.state.edgelm.engine  # type: ignore[attr-defined]
    assert engine is not None
    return engine


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments and other fields skipped)."""
    out = []
    for event in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].lstrip() for line in event.split("\n") if line.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "tiny", "messages": HI, **body})


def check_usage(body: dict[str, Any]) -> None:
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["prompt_tokens"] > 0
    assert body["timings"].keys() >= TIMINGS_KEYS
    assert body["timings"]["prompt_tokens"] == u["prompt_tokens"]


# -- endpoints and shapes --------------------------------------------------------------------------------


def test_health_models(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]


def test_chat_completion_shape(client) -> None:
    r = chat(client, max_tokens=6, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    check_usage(body)
    assert body["usage"]["completion_tokens"] <= 6


def test_chat_stream_chunk_by_chunk(client) -> None:
    kw = {"max_tokens": 8, "temperature": 0, "max_completion_tokens": 8}
    full = chat(client, **kw).json()
    r = chat(client, stream=True, stream_options={"include_usage": True}, **kw)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        assert ch["object"] == "chat.completion.chunk" and ch["id"] == chunks[0]["id"]
        assert "usage" in ch  # include_usage: null until the end
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *body, finish, usage = chunks
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in body)
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    assert finish["usage"] is None and finish["timings"]  # the usage comes once, in the next chunk
    assert usage["choices"] == []
    check_usage(usage)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    assert text == full["choices"][0]["message"]["content"]  # greedy: the same with or without a stream
    assert usage["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]
    # Without include_usage: no usage-only chunk; the finish chunk carries usage and timings.
    data = sse_data(chat(client, stream=True, **kw).text)
    last = json.loads(data[-2])
    assert data[-1] == "[DONE]" and last["choices"][0]["finish_reason"] is not None
    check_usage(last)
    assert all("usage" not in json.loads(d) for d in data[:-2])


def test_text_completion_and_stream(client) -> None:
    r = client.post("/v1/completions", json={"prompt": "Once upon", "max_tokens": 5, "temperature": 0})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert isinstance(body["choices"][0]["text"], str)
    check_usage(body)
    r = client.post(
        "/v1/completions", json={"prompt": "Once upon", "max_tokens": 5, "temperature": 0, "stream": True}
    )
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    check_usage(chunks[-1])
    assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]
    # A prompt of token ids.
    ids = client.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2}).json()
    assert ids["usage"]["prompt_tokens"] == 3


def test_chat_logprobs(client) -> None:
    body = chat(client, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= body["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in content).startswith(body["choices"][0]["message"]["content"][:1])
    for e in content:
        assert e["logprob"] <= 0 and bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]
        top = e["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted(
            (t["logprob"] for t in top), reverse=True
        )
        assert top[0]["logprob"] == pytest.approx(e["logprob"])  # greedy: the likeliest token is chosen
    plain = chat(client, max_tokens=2)
    assert plain.json()["choices"][0]["logprobs"] is None


def test_completion_logprobs_legacy_shape(client) -> None:
    r = client.post(
        "/v1/completions", json={"prompt": "abc", "max_tokens": 4, "temperature": 0, "logprobs": 2}
    )
    lp = r.json()["choices"][0]["logprobs"]
    n = len(lp["tokens"])
    assert n >= 1 and len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert all(len(t) <= 2 for t in lp["top_logprobs"]) and lp["text_offset"][0] == 0


def test_seed_stop_and_extensions(client) -> None:
    kw = {"max_tokens": 12, "temperature": 1.0, "seed": 7, "top_k": 20, "min_p": 0.01, "repeat_penalty": 1.1}
    a = chat(client, **kw).json()["choices"][0]["message"]["content"]
    b = chat(client, **kw).json()["choices"][0]["message"]["content"]
    assert a == b
    full = chat(client, max_tokens=16, temperature=0).json()["choices"][0]["message"]["content"]
    if len(full) >= 4:
        stop = full[2:4]
        cut = chat(client, max_tokens=16, temperature=0, stop=[stop]).json()["choices"][0]
        assert stop not in cut["message"]["content"] and cut["finish_reason"] == "stop"


# -- bad requests --------------------------------------------------------------------------------------

LONG = "word " * 3000
BAD_REQUESTS = [
    ("invalid JSON", b"{not json", None),
    ("not an object", [1, 2], None),
    ("empty messages", {"messages": []}, "messages"),
    ("missing messages", {"model": "tiny"}, "messages"),
    ("messages wrong type", {"messages": "hi"}, "messages"),
    ("bad role", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("content wrong type", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("max_tokens negative", {"messages": HI, "max_tokens": -1}, "max_tokens"),
    ("max_tokens a string", {"messages": HI, "max_tokens": "5"}, "max_tokens"),
    ("temperature a string", {"messages": HI, "temperature": "hot"}, "temperature"),
    ("temperature negative", {"messages": HI, "temperature": -1}, "temperature"),
    ("top_p above 1", {"messages": HI, "top_p": 2}, "top_p"),
    ("stop of the wrong type", {"messages": HI, "stop": 5}, "stop"),
    ("empty stop string", {"messages": HI, "stop": [""]}, "stop"),
    ("n above 1", {"messages": HI, "n": 2}, "n"),
    ("logit_bias key", {"messages": HI, "logit_bias": {"abc": 1}}, "logit_bias"),
    ("logit_bias id past vocab", {"messages": HI, "logit_bias": {"99999": 1}}, "logit_bias"),
    ("top_logprobs without logprobs", {"messages": HI, "top_logprobs": 2}, "top_logprobs"),
    ("prompt over the context", {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    (
        "image content",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0]",
    ),
    ("tool_choice without tools", {"messages": HI, "tool_choice": "required"}, "tool_choice"),
    (
        "unknown tool_choice function",
        {
            "messages": HI,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice",
    ),
    ("bad tool_choice", {"messages": HI, "tool_choice": "sometimes"}, "tool_choice"),
    ("response_format type", {"messages": HI, "response_format": {"type": "yaml"}}, "response_format.type"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_chat_request_is_a_400_naming_the_field(client, body: Any, param: str | None) -> None:
    if isinstance(body, bytes):
        r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_other_client_errors(client) -> None:
    r = chat(client, model="gpt-4o")  # any name: the one model served answers, and says so
    assert r.status_code == 200 and r.json()["model"] != "gpt-4o"
    deep = "[" * 3000 + "]" * 3000
    for route in ("/v1/chat/completions", "/v1/completions"):
        r = client.post(route, content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
        r = client.post(
            route, content='{"messages": ' + deep + "}", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and "error" in r.json()
    r = client.post("/v1/completions", json={"prompt": LONG, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = client.post("/v1/completions", json={"prompt": [["a"]]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("prompt")
    r = client.post("/v1/completions", json={"prompt": "x", "echo": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo"
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    r = client.post("/v1/chat/completions", content=b"x" * (9 * 1024 * 1024))
    assert r.status_code == 413
    assert chat(client, max_tokens=2).status_code == 200  # still serving


@needs_grammar
def test_invalid_json_schema_is_a_400(client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    r = chat(client, response_format=fmt)
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema.schema"
    tools = [
        {"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "bad", "parameters": {"type": 12}}},
    ]
    for choice in ("required", "auto"):
        r = chat(client, tools=tools, tool_choice=choice)
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools[1].function.parameters"


def test_a_bug_is_a_500_and_the_server_lives_on(model, monkeypatch) -> None:
    with TestClient(create_app(model), raise_server_exceptions=False) as c:
        _started(c)
        state = c.app.state.edgelm  # type: ignore[attr-defined]

        def broken(*args: Any, **kw: Any) -> str:
            raise RuntimeError("a bug")

        monkeypatch.setattr(state.model, "chat_prompt", broken)
        r = c.post("/v1/chat/completions", json={"messages": HI})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "a bug" not in r.text
        monkeypatch.undo()
        assert c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2}).status_code == 200


# -- loading, auth, overload, metrics ------------------------------------------------------------------


def test_health_says_loading_until_the_model_is_there(model) -> None:
    gate = threading.Event()

    def slow_load() -> edgelm.Model:
        gate.wait(10)
        return model

    with TestClient(create_app(slow_load, model_name="tiny")) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        r = c.post("/v1/chat/completions", json={"messages": HI})
        assert r.status_code == 503 and "Retry-After" in r.headers and "error" in r.json()
        gate.set()
        _started(c)
        assert c.get("/health").json() == {"status": "ok"}
        assert c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_failed_load_is_reported(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with TestClient(create_app(bad)) as c:
        assert not c.app.state.edgelm.wait_loaded(30)  # type: ignore[attr-defined]
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 503


def test_api_key(model) -> None:
    with TestClient(create_app(model, api_key="sekret")) as c:
        _started(c)
        assert c.get("/health").status_code == 200  # no key needed
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/chat/completions")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
                r = c.request(method, path, headers=headers, json={"messages": HI})
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"]["type"] == "authentication_error"
        ok = {"Authorization": "Bearer sekret"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.get("/metrics", headers=ok).status_code == 200
        r = c.post("/v1/chat/completions", headers=ok, json={"messages": HI, "max_tokens": 2})
        assert r.status_code == 200


def test_overload_is_a_429_with_retry_after(model) -> None:
    with TestClient(create_app(model, n_slots=1, max_queue=1)) as c:
        engine = engine_of(_started(c))
        nothing = SamplingParams(temperature=0)
        prompt = model.encode_prompt("busy")
        busy = engine.submit(Request(prompt, nothing, 100_000, lambda chunk: None))
        deadline = time.monotonic() + 10
        while engine.stats().active < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = engine.submit(Request(prompt, nothing, 10, lambda chunk: None))  # the queue is full now
        try:
            r = c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
            assert "edgelm_rejected_requests_total 1.0" in c.get("/metrics").text
        finally:
            busy.cancel()
            waiting.cancel()
        _wait_idle(engine)
        assert c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_metrics(client) -> None:
    chat(client, max_tokens=3)
    chat(client, max_tokens=3, stream=True)
    chat(client, messages=[])
    text = client.get("/metrics").text
    assert 'edgelm_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert 'edgelm_requests_total{endpoint="/v1/chat/completions",status="400"}' in text
    for name in (
        "edgelm_time_to_first_token_seconds_count",
        "edgelm_time_per_output_token_seconds_bucket",
        "edgelm_queue_depth",
        "edgelm_active_slots",
        "edgelm_decode_tokens_per_second",
        "edgelm_generated_tokens_total",
        "edgelm_model_loaded 1.0",
    ):
        assert name in text, name
    samples = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    assert samples["edgelm_time_to_first_token_seconds_count"] >= 2
    assert samples["edgelm_generated_tokens_total"] >= 6


# -- the prefix cache --------------------------------------------------------------------------------


def test_second_turn_reuses_a_300_token_system_prompt(model, client) -> None:
    def n_tokens(system: str) -> int:
        return len(model.encode_prompt(model.chat_prompt([{"role": "system", "content": system}])))

    system = ""
    while n_tokens(system) < 300:  # the tiny model's vocabulary has short tokens: count, don't guess
        system += f"Rule {len(system) % 97}: answer briefly. "
    assert 300 <= n_tokens(system) <= 330
    turns = []
    for question in ("What is the first rule?", "And the second one?"):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        r = chat(client, messages=messages, max_tokens=4, temperature=0)
        turns.append(r.json()["timings"])
    first, second = turns
    print(f"\nfirst turn: {first}\nsecond turn: {second}")
    assert second["cached_prompt_tokens"] >= 290
    assert second["prompt_tokens"] - second["cached_prompt_tokens"] < 30


# -- client disconnects (a real server: the test client cannot hang up) ---------------------------------

NO_EOS = {str(t): -100.0 for t in (509, 511)}  # the tiny model's end-of-generation ids: keep it talking


@pytest.fixture(scope="module")
def live(model) -> Iterator[BackgroundServer]:
    app = create_app(model, n_slots=2, model_name="tiny")
    with BackgroundServer(app) as server:
        assert app.state.edgelm.wait_loaded(30)
        yield server


def _wait_idle(engine: Engine, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = engine.stats()
        if s.active == 0 and s.queue_depth == 0:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"engine still busy: {engine.stats()}")


def _live_engine(live: BackgroundServer) -> Engine:
    engine = live.server.config.app.state.edgelm.engine
    assert engine is not None
    return engine


def test_stream_disconnect_cancels_generation(model, live) -> None:
    engine = _live_engine(live)
    assert model.tokenizer.eog_ids == {509, 511}
    completed = engine.stats().completed
    body = {"messages": HI, "max_tokens": 5000, "stream": True, "logit_bias": NO_EOS}
    with httpx.Client(base_url=live.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                n += line.startswith("data:")
                if n >= 5:
                    break
        assert engine.stats().active >= 1 or engine.stats().completed == completed
    took = _wait_idle(engine)
    assert engine.stats().completed == completed  # stopped, not finished
    assert took < 3
    text = httpx.get(f"{live.base_url}/metrics").text
    assert "edgelm_cancelled_requests_total 1.0" in text


class _SlowModel:
    """The engine's model, a few ms slower per step: long generations outlast a client's timeout."""

    def __init__(self, model) -> None:
        self._model = model

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def forward(self, *args, **kwargs):
        time.sleep(0.005)
        return self._model.forward(*args, **kwargs)


def test_non_streaming_disconnect_cancels_generation(model, live, monkeypatch) -> None:
    engine = _live_engine(live)
    monkeypatch.setattr(engine, "model", _SlowModel(engine.model))
    completed = engine.stats().completed
    body = {"messages": HI, "max_tokens": 5000, "logit_bias": NO_EOS}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.base_url}/v1/chat/completions", json=body, timeout=0.5)
    _wait_idle(engine)
    assert engine.stats().completed == completed
    r = httpx.post(f"{live.base_url}/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert r.status_code == 200


def test_disconnect_while_queued_leaves_the_queue(model, live, monkeypatch) -> None:
    engine = _live_engine(live)
    # Steps of 5 ms keep the busy sequences going for seconds: a fast model would fill their context
    # (and free their slots) before the queued request is looked at.
    monkeypatch.setattr(engine, "model", _SlowModel(engine.model))
    params = SamplingParams(temperature=0, logit_bias={509: float("-inf"), 511: float("-inf")})
    prompt = model.encode_prompt("busy")
    busy = [engine.submit(Request(prompt, params, 100_000, lambda chunk: None)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while engine.stats().active < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        body = {"messages": HI, "max_tokens": 5, "stream": True}
        with httpx.stream("POST", f"{live.base_url}/v1/chat/completions", json=body, timeout=30) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data:"))
            assert json.loads(first[5:])["choices"][0]["delta"]["role"] == "assistant"
            assert engine.stats().queue_depth == 1  # waiting behind the two busy slots
        deadline = time.monotonic() + 5
        while engine.stats().queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.stats().queue_depth == 0 and engine.stats().active == 2
    finally:
        for h in busy:
            h.cancel()
    _wait_idle(engine)


# -- reading tool calls back -----------------------------------------------------------------------------

NAMES = frozenset({"get_weather", "get_time"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Paris"}}', [("get_weather", {"city": "Paris"})]),
        ('  {"name": "get_time", "parameters": {}}\n', [("get_time", {})]),
        ('{"name": "get_time", "arguments": "{\\"zone\\": \\"utc\\"}"}', [("get_time", {"zone": "utc"})]),
        (
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
            [("get_time", {}), ("get_weather", {"city": "Oslo"})],
        ),
        ('{"name": "launch_rockets", "arguments": {}}', None),
        ('{"name": "get_time", "arguments": [1]}', None),
        ('{"name": "get_time", "arguments": {}} and some words', None),
        ("<tool_call>{}</tool_call> text", None),
        ("It is sunny.", None),
        ("{not json", None),
    ],
)
def test_parse_tool_calls(text: str, expected: list[tuple[str, dict[str, Any]]] | None) -> None:
    calls = parse_tool_calls(text, NAMES)
    if expected is None:
        assert calls is None
    else:
        assert calls is not None
        assert [(c.name, json.loads(c.arguments)) for c in calls] == expected
        assert all(c.id.startswith("call_") for c in calls)


def test_could_be_tool_call() -> None:
    for held in ("", "  ", "\n{", '{"na', "<tool", "<tool_call>{"):
        assert could_be_tool_call(held), held
    for text in ("Hello", " The", "<b>", "[1]"):
        assert not could_be_tool_call(text), text


def test_tokenize_and_detokenize_as_llama_cpp_server(client) -> None:
    model = client.app.state.edgelm.model
    tok = model.tokenizer
    text = "Turn off the stove, ça va?"
    r = client.post("/tokenize", json={"content": text})
    assert r.status_code == 200 and r.json()["tokens"] == tok.encode(
        text, add_special=False, parse_special=True
    )
    r = client.post("/tokenize", json={"content": text, "add_special": True, "with_pieces": True})
    pieces = r.json()["tokens"]
    assert [p["id"] for p in pieces] == tok.encode(text, add_special=True, parse_special=True)
    joined = b"".join(
        p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces
    )
    assert text.encode() in joined
    ids = tok.encode(text, add_special=False)
    r = client.post("/detokenize", json={"tokens": ids})
    assert r.status_code == 200 and r.json()["content"] == text
    r = client.post("/detokenize", json={"tokens": [10**9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
    r = client.post("/tokenize", json={"content": 5})
    assert r.status_code == 400


def test_max_tokens_cap(tiny_model) -> None:
    model = edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=256)
    app = create_app(model, max_tokens=3)
    with TestClient(app) as c:
        assert app.state.edgelm.wait_loaded(30)
        for body in ({"max_tokens": 50}, {}):
            r = c.post(
                "/v1/chat/completions", json={"messages": HI, "temperature": 0, "ignore_eos": True, **body}
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        r = c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 40, "temperature": 0})
        assert r.json()["usage"]["completion_tokens"] <= 3
        r = c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 2, "temperature": 0})
        assert r.json()["usage"]["completion_tokens"] <= 2
    with pytest.raises(ValueError, match="max_tokens"):
        create_app(model, max_tokens=0)


def test_serve_defaults_agree_with_the_machine() -> None:
    import os

    from edgelm.cli.main import DEFAULT_SLOTS, build_parser

    args = build_parser().parse_args(["serve", "m.gguf"])
    assert args.slots == DEFAULT_SLOTS == max(1, min(4, os.cpu_count() or 1)) and args.max_tokens is None
    assert (
        f"here {DEFAULT_SLOTS}" in build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    )

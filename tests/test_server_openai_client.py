"""The server through the real `openai` client, against uvicorn on 127.0.0.1: what moving an app from the
cloud to the device looks like (a change of base URL). Also a short run of the load test."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

import edgelm
from edgelm.server import BackgroundServer, create_app

KEY = "test-key"
HI: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["utc", "local"]}},
            "required": ["zone"],
        },
    },
}
needs_grammar = pytest.mark.skipif(
    importlib.util.find_spec("edgelm.runtime.grammar") is None, reason="edgelm.runtime.grammar not there"
)


@pytest.fixture(scope="module")
def server(tiny_model) -> Iterator[BackgroundServer]:
    model = edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=1024)
    app = create_app(model, api_key=KEY, n_slots=2, model_name="tiny")
    with BackgroundServer(app) as s:
        assert app.state.edgelm.wait_loaded(30)
        yield s


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models(client) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_chat(client) -> None:
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=6, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    extra = r.model_extra or {}
    assert extra["timings"]["prompt_tokens"] == r.usage.prompt_tokens


def test_chat_stream(client) -> None:
    full = client.chat.completions.create(model="tiny", messages=HI, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(
        model="tiny",
        messages=HI,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_completions(client) -> None:
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and isinstance(r.choices[0].text, str)
    chunks = list(
        client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_logprobs(client) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=HI, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


@needs_grammar
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}], ids=["required", "named"]
)
def test_forced_tool_call(client, stream: bool, choice: Any) -> None:
    kw: dict[str, Any] = {"model": "tiny", "messages": HI, "tools": [WEATHER, TIME], "tool_choice": choice}
    kw |= {"max_tokens": 60, "temperature": 1.0, "seed": 3}
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(stream=True, **kw):
            if not chunk.choices:
                continue
            for d in chunk.choices[0].delta.tool_calls or ():
                call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += d.id or ""
                call["name"] += (d.function.name or "") if d.function else ""
                call["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls" and len(calls) == 1
        name, arguments, call_id = calls[0]["name"], calls[0]["arguments"], calls[0]["id"]
    else:
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
        (call,) = r.choices[0].message.tool_calls  # type: ignore[misc]
        assert call.type == "function"
        name, arguments, call_id = call.function.name, call.function.arguments, call.id  # type: ignore[union-attr]
    assert call_id.startswith("call_")
    tool = {"get_weather": WEATHER, "get_time": TIME}[name]
    if choice != "required":
        assert name == "get_time"
    jsonschema.validate(json.loads(arguments), tool["function"]["parameters"])  # type: ignore[index]


def test_tool_result_turn_and_auto(client) -> None:
    """A conversation with a call and its result goes through the template; "auto" lets the model choose
    (random weights: text)."""
    messages = [
        *HI,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    r = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=6)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=messages, tools=[WEATHER], max_tokens=6, stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason in ("stop", "length", "tool_calls")


@needs_grammar
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema(client, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "confidence": {"type": "integer"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    kw: dict[str, Any] = {
        "model": "tiny",
        "messages": HI,
        "response_format": fmt,
        "max_tokens": 48,
        "seed": 1,
    }
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kw))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    else:
        r = client.chat.completions.create(**kw)
        text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
    assert finish == "stop"
    jsonschema.validate(json.loads(text), schema)


@needs_grammar
def test_json_object(client) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=HI, response_format={"type": "json_object"}, max_tokens=40, seed=2
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


def test_errors_are_openai_exceptions(client, server) -> None:
    r = client.chat.completions.create(model="MODEL", messages=HI, max_tokens=2)
    assert r.model == "tiny"  # any name is answered by the model served, which the reply names
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=-3)
    assert bad.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=[])
    assert bad.value.param == "messages"
    wrong = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


@needs_grammar
def test_invalid_schema_is_a_bad_request(client) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=HI, response_format=fmt)
    assert bad.value.param == "response_format.json_schema.schema"


# -- the load test, short ------------------------------------------------------------------------------


def _load_test_module() -> Any:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("edgelm_load_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_load_short(tiny_model) -> None:
    """10 streaming clients for 5 s, a quarter hanging up: every stream well formed, the server healthy
    and idle afterwards, memory back near the baseline."""
    load_test = _load_test_module()
    args: argparse.Namespace = load_test.parse_args(
        ["--duration", "5", "--clients", "10", "--slots", "2", "--max-queue", "4", "--max-tokens", "24"]
    )
    res = load_test.run_load_test(tiny_model("tiny-qwen2", "q8_0"), args)
    report = res.report()
    print("\n" + json.dumps(report, indent=2))
    assert not res.malformed and not res.errors, report
    assert res.completed > 0 and res.health_after and res.request_after and res.engine_idle_after, report
    assert res.rss_ok, report


def test_embeddings(client, server) -> None:
    import numpy as np

    model = server.server.config.app.state.edgelm.model
    texts = ["Turn off the stove", "the kitchen light"]
    r = client.embeddings.create(model="tiny", input=texts)  # the client asks for base64
    assert [d.index for d in r.data] == [0, 1] and r.model == "tiny"
    vectors = np.array([d.embedding for d in r.data], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    floats = client.embeddings.create(model="tiny", input=texts[0], encoding_format="float")
    np.testing.assert_array_equal(np.array(floats.data[0].embedding, dtype=np.float32), vectors[0])
    np.testing.assert_array_equal(model.embed(texts[0]), vectors[0])  # the in-process API agrees
    ids = client.embeddings.create(model="tiny", input=[[5, 6, 7]], encoding_format="float")
    assert len(ids.data) == 1 and ids.usage.prompt_tokens == 3
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny", input="")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny", input="word " * 2000)


def test_embeddings_while_generating(client) -> None:
    """An embedding is computed between the engine's steps while a generation streams."""
    import threading

    done: list[str] = []

    def generate() -> None:
        r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=64, temperature=0)
        done.append(r.choices[0].finish_reason)

    t = threading.Thread(target=generate)
    t.start()
    alone = client.embeddings.create(model="tiny", input="Turn off the stove", encoding_format="float")
    t.join(timeout=120)
    assert done and done[0] in ("stop", "length")
    again = client.embeddings.create(model="tiny", input="Turn off the stove", encoding_format="float")
    assert alone.data[0].embedding == again.data[0].embedding


def test_bad_bodies_and_token_routes_over_http(server) -> None:
    """Over a real socket: a body nested too deeply is a 400 (not a 500), and the token routes answer."""
    import httpx

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        deep = '{"model": "tiny", "messages": ' + "[" * 2000 + "]" * 2000 + "}"
        r = http.post("/v1/chat/completions", content=deep)
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
        ids = http.post("/tokenize", json={"content": "Turn off the stove"}).json()["tokens"]
        assert http.post("/detokenize", json={"tokens": ids}).json()["content"] == "Turn off the stove"
        assert http.get("/health").status_code == 200  # still serving

"""The Python API and the run/chat CLI on tiny synthetic models."""

from __future__ import annotations

import numpy as np
import pytest

import edgelm
from edgelm.cli.main import main


@pytest.fixture(scope="module")
def model(tiny_model) -> edgelm.Model:
    return edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=128)


def test_load_defaults(tiny_model) -> None:
    m = edgelm.load(tiny_model("tiny-llama", "f16"))
    assert m.n_ctx == min(m.config.context_length, 4096)
    assert m.tokenizer.vocab_size == m.config.vocab_size


def test_same_seed_same_text_other_seed_other_text(model) -> None:
    a = model.generate("The weather today", max_tokens=24, temperature=1.0, seed=5)
    b = model.generate("The weather today", max_tokens=24, temperature=1.0, seed=5)
    c = model.generate("The weather today", max_tokens=24, temperature=1.0, seed=6)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != c.token_ids


def test_greedy_follows_the_logits(model) -> None:
    r = model.generate("Once upon", max_tokens=6, temperature=0)
    ids = list(r.prompt_token_ids)
    for tok in r.token_ids:
        assert tok == int(model.logits(ids)[-1].argmax())
        ids.append(tok)


def test_result_fields_and_timings(model) -> None:
    r = model.generate("abc", max_tokens=5, temperature=0)
    assert r.finish_reason == "length" and len(r.token_ids) == 5
    t = r.timings
    assert t.prompt_tokens == len(r.prompt_token_ids) and t.decode_tokens == 5
    assert t.ttft_ms > 0 and t.prompt_ms > 0 and t.decode_tokens_per_s > 0
    assert t.backend == model.transformer.ops.name
    assert r.text == model.tokenizer.decode(r.token_ids)


def test_stream_chunks_concatenate_to_the_result(model) -> None:
    chunks = list(model.stream_generate("abc", max_tokens=10, temperature=0))
    full = model.generate("abc", max_tokens=10, temperature=0)
    assert "".join(c.text for c in chunks) == full.text
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].finish_reason == "length"


def test_stop_string_is_never_shown(model) -> None:
    full = model.generate("xyz", max_tokens=20, temperature=0).text
    assert len(full) > 4
    stop = full[2:4]
    r = model.generate("xyz", max_tokens=20, temperature=0, stop=[stop])
    assert r.finish_reason == "stop"
    assert r.text == full[: full.index(stop)]
    streamed = "".join(c.text for c in model.stream_generate("xyz", max_tokens=20, temperature=0, stop=stop))
    assert streamed == r.text


def test_eos_ends_generation(model) -> None:
    eos = model.tokenizer.eos_id
    r = model.generate("hello", max_tokens=20, temperature=0, logit_bias={eos: 1e4})
    assert r.finish_reason == "stop" and r.token_ids == [] and r.text == ""


def test_prompt_longer_than_context(model) -> None:
    ids = list(range(3, 3 + 200))
    with pytest.raises(edgelm.PromptTooLongError, match=r"200 tokens.*128"):
        model.generate(ids, max_tokens=4)
    r = model.generate(ids, max_tokens=4, truncate=True, temperature=0)
    assert len(r.prompt_token_ids) == 200 and r.finish_reason == "length"


def test_bad_inputs_name_the_field(model) -> None:
    with pytest.raises(ValueError, match="temperature"):
        model.generate("a", temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate("a", top_p=1.5)
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("a", max_tokens=-3)
    with pytest.raises(ValueError, match="prompt"):
        model.generate([10**7])
    with pytest.raises(ValueError, match="n_ctx"):
        edgelm.load(model.transformer.model_file.path, n_ctx=0)


def test_empty_prompt_is_just_bos_or_an_error(tiny_model) -> None:
    m = edgelm.load(tiny_model("tiny-llama", "q8_0"), n_ctx=64)
    if m.tokenizer.add_bos:
        assert m.generate("", max_tokens=2).finish_reason == "length"
    else:
        with pytest.raises(ValueError, match="empty"):
            m.generate("", max_tokens=2)


def test_interrupted_generation_leaves_the_model_usable(model) -> None:
    before = model.generate("abc", max_tokens=8, temperature=0)
    stream = model.stream_generate("something else entirely", max_tokens=50, temperature=0)
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(stream):
            if i == 3:
                raise KeyboardInterrupt
    stream.close()
    after = model.generate("abc", max_tokens=8, temperature=0)
    assert after.token_ids == before.token_ids


def test_chat_renders_the_template(model) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = model.chat_prompt(messages)
    assert prompt.endswith("<|im_start|>assistant\n") and "Be brief." in prompt
    r = model.chat(messages, max_tokens=4, temperature=0)
    assert r.prompt_token_ids == model.encode_prompt(prompt)


def test_logits_shape_and_match_forward(model) -> None:
    ids = [5, 6, 7, 8]
    lg = model.logits(ids)
    assert lg.shape == (4, model.config.vocab_size) and lg.dtype == np.float32
    again = model.transformer.forward(np.array(ids), np.arange(4), [model.transformer.new_cache(16)])
    np.testing.assert_array_equal(lg, again)


def test_cli_run_streams_then_prints_timings(tiny_model, capsys) -> None:
    assert main(["run", str(tiny_model("tiny-llama", "q4_0")), "-p", "Hi", "-n", "5", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert "tok/s" in out.err and "first token" in out.err


def test_cli_chat_reset_and_quit(tiny_model, capsys, monkeypatch) -> None:
    lines = iter(["hello", "/reset", "again", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", str(tiny_model("tiny-qwen3", "q8_0")), "-n", "3", "--temp", "0"]) == 0
    assert "[conversation cleared]" in capsys.readouterr().err


def test_cli_chat_ctrl_c_stops_the_reply_not_the_program(tiny_model, capsys, monkeypatch) -> None:
    real = edgelm.load(tiny_model("tiny-qwen3", "q8_0"), n_ctx=128)
    replies = []

    class Interrupting:
        """The real model, whose first reply is interrupted by Ctrl-C after one chunk."""

        def __getattr__(self, name):
            return getattr(real, name)

        def stream_chat(self, messages, **kwargs):
            replies.append(list(messages))
            for i, chunk in enumerate(real.stream_chat(messages, **kwargs)):
                if len(replies) == 1 and i == 1:
                    raise KeyboardInterrupt
                yield chunk

    monkeypatch.setattr(edgelm, "load", lambda *a, **k: Interrupting())
    lines = iter(["first", "second", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "unused.gguf", "-n", "6", "--temp", "0"]) == 0
    assert "[reply stopped]" in capsys.readouterr().err
    assert len(replies) == 2  # the program went on to the next question
    assert [m["role"] for m in replies[1]] == ["user", "assistant", "user"]
    after = real.generate("abc", max_tokens=4, temperature=0)
    assert after.finish_reason == "length"  # the model is still usable


def test_tokenize_and_detokenize_as_llama_cpp_python_users_expect(model) -> None:
    tok = model.tokenizer
    assert edgelm.Tokenizer is type(tok)
    text = "Hello world, héllo"
    ids = model.tokenize(text)
    assert ids == tok.encode(text, add_special=True, parse_special=False)
    assert model.tokenize(text.encode()) == ids  # bytes, as llama-cpp-python takes them
    assert model.tokenize(text, add_bos=False) == tok.encode(text, add_special=False)
    assert model.detokenize(ids) == tok.decode(ids) and text in model.detokenize(ids)
    with pytest.raises(edgelm.EdgelmError, match=r"text=.*not UTF-8"):
        model.tokenize(b"\xff\xfe bad")


def test_cli_version() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == f"edgelm {edgelm.__version__}"


def test_cli_chat_help_multiline_and_a_history_that_outgrows_the_context(
    tiny_model, capsys, monkeypatch
) -> None:
    real = edgelm.load(tiny_model("tiny-qwen3", "q8_0"), n_ctx=160)
    seen: list[list[dict]] = []

    class Recording:
        def __getattr__(self, name):
            return getattr(real, name)

        def stream_chat(self, messages, **kwargs):
            seen.append([dict(m) for m in messages])
            return real.stream_chat(messages, **kwargs)

    monkeypatch.setattr(edgelm, "load", lambda *a, **k: Recording())
    long = "word " * 6
    lines = iter(["/help", '"""', "line one", "line two", '"""', "a \\", "b", *[long] * 6, "/nope", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "unused.gguf", "--system", "Be terse.", "-n", "4", "--temp", "0"]) == 0
    err = capsys.readouterr().err
    assert "/help this list" in err.split("\n", 1)[1]  # /help printed the commands (after the banner)
    assert seen[0][-1] == {"role": "user", "content": "line one\nline two"}
    assert seen[1][-1] == {"role": "user", "content": "a \nb"}
    assert err.count("outgrew the context") == 1 and "unknown command /nope" in err
    assert len(seen) == 8 and all(m[0] == {"role": "system", "content": "Be terse."} for m in seen)
    for messages in seen:  # every prompt sent fitted, with room for the reply
        assert len(real.encode_prompt(real.chat_prompt(messages))) < real.n_ctx - 64
    assert len(seen[-1]) < 2 + 2 * 7  # old turns were dropped

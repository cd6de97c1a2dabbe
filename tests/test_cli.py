"""The command line through `subprocess`, as a user runs it: bad command lines get one line naming the
problem and a non-zero exit (never a traceback); flags; warnings; progress bars on a terminal."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def edgelm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_synth_to_a_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "x.gguf"
    line = error_line(edgelm("synth", "--like", "tiny-llama", "-o", str(out)))
    assert str(out) in line and "does not exist" in line
    assert not out.parent.exists()


def test_synth_to_a_folder(tmp_path: Path) -> None:
    line = error_line(edgelm("synth", "--like", "tiny-llama", "-o", str(tmp_path)))
    assert str(tmp_path) in line and "is a folder" in line
    assert list(tmp_path.iterdir()) == []


def test_quantize_to_a_missing_folder(tiny_model, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "y.gguf"
    line = error_line(edgelm("quantize", str(tiny_model("tiny-llama", "f16")), str(out), "--type", "q8_0"))
    assert str(out) in line and "does not exist" in line


def test_a_port_out_of_range(tiny_model) -> None:
    done = edgelm("serve", str(tiny_model("tiny-llama", "q8_0")), "--port", "99999")
    assert done.returncode == 2 and "--port" in done.stderr and "0-65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_context_larger_than_memory_is_refused_before_allocating(tiny_model) -> None:
    line = error_line(
        edgelm("run", str(tiny_model("tiny-llama", "q8_0")), "-p", "hi", "--ctx", "1000000000000")
    )
    assert "--ctx 1000000000000:" in line and "GB" in line and "available" in line and "n_ctx" not in line
    line = error_line(edgelm("run", str(tiny_model("tiny-llama", "q8_0")), "-p", "hi", "--temp", "-1"))
    assert line.startswith("edgelm: error: --temp -1.0:") and "temperature" not in line


def test_serve_ends_when_the_model_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    done = edgelm("serve", str(bad), "--port", str(port), timeout=60)
    line = error_line(done)
    assert str(bad) in line and done.returncode == 1
    assert "Uvicorn running" not in done.stderr  # the port was never bound
    assert time.monotonic() - t0 < 60


HOSTILE_TEMPLATE = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}x"


def test_serve_refuses_a_template_that_cannot_render_in_bounds(tmp_path: Path) -> None:
    from conftest import write_mini_model

    path = write_mini_model(tmp_path / "hostile.gguf", chat_template=HOSTILE_TEMPLATE)
    line = error_line(edgelm("serve", str(path), "--port", "0", timeout=60))
    assert "chat template 'tokenizer.chat_template' exceeded the bound" in line


def test_a_request_through_a_template_past_its_bounds_is_a_400(tmp_path: Path) -> None:
    """Served from Python (no check at load), over HTTP: each request is bounded, the server keeps
    answering."""
    import httpx

    import edgelm
    from conftest import write_mini_model
    from edgelm.server import BackgroundServer, create_app

    path = write_mini_model(tmp_path / "hostile.gguf", chat_template=HOSTILE_TEMPLATE)
    app = create_app(edgelm.load(path))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert app.state.edgelm.wait_loaded(30)
        t0 = time.monotonic()
        messages = [{"role": "user", "content": "Turn off the stove"}]
        r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
        assert r.status_code == 400 and "exceeded the bound" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 10
        r = client.post("/v1/completions", json={"prompt": "abc", "max_tokens": 2})
        assert r.status_code == 200


# -- edgelm run's flags ------------------------------------------------------------------------


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_reads_the_prompt_from_stdin_or_a_file(tiny_model, tmp_path: Path) -> None:
    import edgelm

    path = str(tiny_model("tiny-qwen2", "q8_0"))
    expected = edgelm.load(path).generate("Hello there", max_tokens=6, temperature=0).text
    common = ("--raw", "--temp", "0", "-n", "6")
    assert _run(path, "-p", "Hello there", *common).stdout == expected + "\n"
    assert _run(path, "-p", "-", *common, stdin="Hello there").stdout == expected + "\n"
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Hello there", encoding="utf-8")
    assert _run(path, "-f", str(prompt), *common).stdout == expected + "\n"
    line = error_line(_run(path, "-f", str(tmp_path / "missing.txt")))
    assert "-f" in line and "missing.txt" in line


def test_run_stop_truncate_and_json_schema(tiny_model, tmp_path: Path) -> None:
    import json

    import jsonschema

    import edgelm

    path = str(tiny_model("tiny-qwen2", "q8_0"))
    model = edgelm.load(path)
    full = model.generate("abc", max_tokens=24, temperature=0).text
    stop = full[8:11]
    expected = model.generate("abc", max_tokens=24, temperature=0, stop=[stop]).text
    assert len(expected) < len(full)
    assert (
        _run(path, "-p", "abc", "--raw", "--temp", "0", "-n", "24", "--stop", stop).stdout == expected + "\n"
    )

    long = "word " * 200
    line = error_line(_run(path, "-p", long, "--raw", "--ctx", "64", "-n", "2"))
    assert "--ctx" in line and "--truncate" in line and "n_ctx" not in line
    assert _run(path, "-p", long, "--raw", "--ctx", "64", "-n", "2", "--truncate").returncode == 0

    schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema), encoding="utf-8")
    done = _run(path, "-p", "abc", "--raw", "--seed", "1", "-n", "64", "--json-schema", str(schema_file))
    jsonschema.validate(json.loads(done.stdout), schema)
    schema_file.write_text("{not json", encoding="utf-8")
    assert "--json-schema" in error_line(_run(path, "-p", "abc", "--json-schema", str(schema_file)))


def test_run_system_needs_the_chat_template(tiny_model, tmp_path: Path) -> None:
    from conftest import write_mini_model

    path = str(tiny_model("tiny-qwen2", "q8_0"))
    assert "--raw" in error_line(_run(path, "-p", "hi", "--system", "Be terse.", "--raw"))
    bare = str(write_mini_model(tmp_path / "no-template.gguf"))
    assert "has none" in error_line(_run(bare, "-p", "hi", "--system", "Be terse."))


def test_requantizing_needs_to_be_asked_for(tiny_model, tmp_path: Path) -> None:
    src = str(tiny_model("tiny-llama", "q8_0"))
    out = tmp_path / "again.gguf"
    line = error_line(edgelm("quantize", src, str(out), "--type", "q4_0"))
    assert "already quantized (Q8_0)" in line and "--allow-requantize" in line and not out.exists()
    done = edgelm("quantize", src, str(out), "--type", "q4_0", "--allow-requantize")
    assert done.returncode == 0 and out.is_file()


def test_warnings_for_settings_that_hurt(tiny_model) -> None:
    import os

    import edgelm

    path = str(tiny_model("tiny-qwen2", "q8_0"))
    trained = edgelm.load(path).config.context_length
    threads = (os.cpu_count() or 1) + 1
    done = _run(path, "-p", "hi", "-n", "2", "--ctx", str(trained * 2), "--threads", str(threads))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("edgelm: warning:")]
    assert len(warnings) == 2
    assert f"--ctx {trained * 2} is beyond the {trained} tokens" in warnings[0]
    assert f"--threads {threads} is more than" in warnings[1]
    quiet = _run(path, "-p", "hi", "-n", "2", "--ctx", str(trained))
    assert "warning" not in quiet.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="no `script` to run a command on a terminal")
def test_progress_bars_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal (`script` gives the command one), synth and quantize draw a bar; elsewhere none."""
    out = tmp_path / "m.gguf"
    cmd = f"{sys.executable} -m edgelm.cli.main synth --like tiny-llama --quant f16 -o {out}"
    done = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and "synth tiny-llama f16" in done.stdout, done.stdout[-2000:]
    plain = edgelm("quantize", str(out), str(tmp_path / "q.gguf"), "--type", "q8_0")
    assert plain.returncode == 0 and "quantize" not in plain.stderr


def test_run_with_a_grammar(tiny_model, tmp_path: Path) -> None:
    path = str(tiny_model("tiny-qwen2", "q8_0"))
    grammar = tmp_path / "answer.lark"
    grammar.write_text('start: "yes" | "no" | "maybe later"\n', encoding="utf-8")
    for seed in ("1", "2", "3"):
        done = _run(path, "-p", "Is it on?", "--raw", "--seed", seed, "-n", "16", "--grammar", str(grammar))
        assert done.returncode == 0 and done.stdout.strip() in ("yes", "no", "maybe later"), done.stdout
    grammar.write_text("start: oops(\n", encoding="utf-8")
    line = error_line(_run(path, "-p", "x", "--grammar", str(grammar)))
    assert f"--grammar {grammar}" in line
    both = _run(path, "-p", "x", "--grammar", str(grammar), "--json-schema", str(grammar))
    assert both.returncode == 2 and "not allowed with" in both.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="no `script` to run a command on a terminal")
def test_long_commands_show_their_stage_on_a_terminal() -> None:
    """`bench speed` logs through stage_log: the lines, and a spinner naming the stage at hand."""
    code = (
        "import time; from edgelm.cli.progress import stage_log\n"
        "with stage_log('bench speed') as log:\n"
        "    log('measuring edgelm on x.gguf ...'); time.sleep(0.5); log('done')\n"
    )
    done = subprocess.run(
        ["script", "-qec", f"{sys.executable} -c {shlex.quote(code)}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0
    assert "bench speed: measuring edgelm on x.gguf" in done.stdout and "done" in done.stdout


def test_chat_through_standard_input() -> None:
    """`edgelm chat` reading its lines from a pipe: /help, a multi-line block, /quit."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        from edgelm.convert.synth import synthesize

        path = Path(d) / "m.gguf"
        synthesize("tiny-qwen3", "q8_0", path)
        lines = '/help\n"""\nline one\nline two\n"""\n/nope\n/quit\n'
        done = subprocess.run(
            [sys.executable, "-m", "edgelm.cli.main", "chat", str(path), "-n", "3", "--temp", "0"],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("/help this list") == 2  # the banner, then /help
    assert "unknown command /nope" in done.stderr and "Traceback" not in done.stderr


def test_gitignore_keeps_model_files_out() -> None:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "model.gguf", "benchmarks/results/speed.json"],
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["model.gguf", "benchmarks/results/speed.json"]
    kept = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "tests/data/vocab/ggml-vocab-qwen2.gguf"],
        capture_output=True,
    )
    assert kept.returncode == 1  # the tests' vocab files stay tracked

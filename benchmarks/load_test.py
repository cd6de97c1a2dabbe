"""Load test of `edgelm serve`: many concurrent streaming clients, some hanging up mid-stream.

    python benchmarks/load_test.py [--duration 60] [--clients 50] [--slots 4] [--model FILE.gguf]

Starts the server as a subprocess on 127.0.0.1 (a free port; loopback only) with a tiny random-weight
model (or --model), drives it for --duration seconds, then checks that

- every stream that ran to its end was well formed (each `data:` chunk valid JSON of the right shape, a
  finish reason, usage and timings in the final chunk, `[DONE]` last), and every refusal a 429 with
  Retry-After and an OpenAI-style error body;
- the server still answers /health and a chat request, and its engine went idle (no slot left busy by a
  client that hung up);
- its resident memory came back near the baseline taken after warm-up.

Prints a report (JSON with --json) and exits 0 when all checks pass. The server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
SYSTEM = "You are a concise assistant running on a small device. Answer in one short sentence. " * 4
QUESTIONS = (
    "What is the capital of France?",
    "Name a prime number.",
    "Say hello.",
    "Count to three.",
    "Why?",
)
# RSS after the run may exceed the baseline by this much (allocator caches, imported code paths).
RSS_SLACK_MB = 64.0
RSS_SLACK_RATIO = 0.25


@dataclass
class LoadResult:
    duration_s: float = 0.0
    clients: int = 0
    requests: int = 0
    completed: int = 0  # streams read to [DONE]
    disconnected: int = 0  # streams this test hung up on
    rejected: int = 0  # 429s
    completion_tokens: int = 0
    malformed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server_cancelled: float = 0.0  # the server's count of generations stopped by a disconnect
    health_after: bool = False
    request_after: bool = False
    engine_idle_after: bool = False
    rss_baseline_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    ttft_ms_p50: float = 0.0
    ttft_ms_p95: float = 0.0
    ttfts_ms: list[float] = field(default_factory=list, repr=False)  # of completed streams

    @property
    def rss_ok(self) -> bool:
        return self.rss_after_mb <= self.rss_baseline_mb + max(
            RSS_SLACK_MB, RSS_SLACK_RATIO * self.rss_baseline_mb
        )

    @property
    def ok(self) -> bool:
        return (
            not self.malformed
            and not self.errors
            and self.completed > 0
            and self.health_after
            and self.request_after
            and self.engine_idle_after
            and self.rss_ok
        )

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        del out["ttfts_ms"]
        out["malformed"] = self.malformed[:10]
        out["errors"] = self.errors[:10]
        out["n_malformed"], out["n_errors"] = len(self.malformed), len(self.errors)
        out["rss_ok"], out["ok"] = self.rss_ok, self.ok
        return out


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    return None


# -- checks of what the server sends ---------------------------------------------------------------------


def check_chunk(chunk: Any) -> str | None:
    """What is wrong with one `chat.completion.chunk`, or None."""
    if not isinstance(chunk, dict):
        return "chunk is not an object"
    if chunk.get("object") != "chat.completion.chunk" or not str(chunk.get("id", "")).startswith("chatcmpl-"):
        return f"bad object/id: {chunk.get('object')!r} {chunk.get('id')!r}"
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return "choices is not a list"
    if not choices:
        return None if isinstance(chunk.get("usage"), dict) else "empty choices without usage"
    c = choices[0]
    if c.get("index") != 0 or not isinstance(c.get("delta"), dict):
        return "bad choice"
    content = c["delta"].get("content")
    if content is not None and not isinstance(content, str):
        return "content is not a string"
    if c.get("finish_reason") is not None:
        if c["finish_reason"] not in ("stop", "length", "tool_calls"):
            return f"bad finish_reason {c['finish_reason']!r}"
        if not isinstance(chunk.get("timings"), dict):
            return "final chunk without timings"
    usage = chunk.get("usage")
    if usage is not None and (
        not isinstance(usage, dict)
        or usage.get("total_tokens") != usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    ):
        return f"bad usage {usage!r}"
    return None


def check_error(r: httpx.Response, body: bytes) -> str | None:
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{r.status_code} without an OpenAI-style error body"
    if not isinstance(err, dict) or not err.get("message") or not err.get("type"):
        return f"{r.status_code} error body incomplete"
    if r.status_code == 429 and "retry-after" not in r.headers:
        return "429 without Retry-After"
    return None


# -- the clients ---------------------------------------------------------------------------------------


async def _client(
    http: httpx.AsyncClient, rng: random.Random, deadline: float, res: LoadResult, args: argparse.Namespace
) -> None:
    while time.monotonic() < deadline:
        body = {
            "model": "load",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": rng.choice(QUESTIONS) + " " + str(rng.randrange(1000))},
            ],
            "max_tokens": rng.randint(4, args.max_tokens),
            "temperature": 0.8,
            "stream": True,
            "stream_options": {"include_usage": rng.random() < 0.5},
        }
        hang_up_after = rng.randint(1, 8) if rng.random() < args.disconnect else None
        res.requests += 1
        try:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    raw = await r.aread()
                    problem = check_error(r, raw)
                    if problem:
                        res.malformed.append(problem)
                    if r.status_code == 429:
                        res.rejected += 1
                        await asyncio.sleep(rng.uniform(0.1, 1.0) * float(r.headers.get("retry-after", 1)))
                    else:
                        res.errors.append(f"status {r.status_code}: {raw[:200]!r}")
                    continue
                n_chunks, done, final, usage, hung_up = 0, False, None, None, False
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    if done:
                        res.malformed.append("data after [DONE]")
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        res.malformed.append(f"not JSON: {payload[:80]!r}")
                        break
                    problem = check_chunk(chunk)
                    if problem:
                        res.malformed.append(problem)
                    if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                        final = chunk
                    usage = chunk.get("usage") or usage  # in the finish chunk, or the one after it
                    n_chunks += 1
                    if hang_up_after is not None and n_chunks >= hang_up_after:
                        hung_up = True
                        break  # leaving the block closes the connection mid-stream
            if hung_up:
                res.disconnected += 1
            elif not done or final is None or usage is None:
                res.malformed.append(f"stream ended without [DONE], a finish chunk or usage: {done} {final}")
            else:
                res.completed += 1
                res.completion_tokens += usage["completion_tokens"]
                res.ttfts_ms.append(final["timings"]["ttft_ms"])
        except httpx.HTTPError as e:
            res.errors.append(f"{type(e).__name__}: {e}")


async def _drive(base_url: str, args: argparse.Namespace, res: LoadResult) -> None:
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    timeout = httpx.Timeout(120.0, connect=10.0)
    deadline = time.monotonic() + args.duration
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        await asyncio.gather(
            *(
                _client(http, random.Random(args.seed * 1000 + i), deadline, res, args)
                for i in range(args.clients)
            )
        )


# -- the server ----------------------------------------------------------------------------------------


def _wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not become healthy")


def _wait_idle(base_url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base_url}/metrics", timeout=5).text
        if _metric(text, "edgelm_active_slots") == 0 and _metric(text, "edgelm_queue_depth") == 0:
            return True
        time.sleep(0.1)
    return False


def _one_request(base_url: str) -> bool:
    r = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4},
        timeout=60,
    )
    return r.status_code == 200 and r.json()["object"] == "chat.completion"


def run_load_test(model: Path, args: argparse.Namespace) -> LoadResult:
    """Serve `model` in a subprocess, drive it as `args` says, check it afterwards."""
    port = _free_port()
    base_url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "edgelm.cli.main", "serve", str(model), "--host", HOST, "--port", str(port)]
    cmd += ["--slots", str(args.slots), "--ctx", str(args.ctx), "--max-queue", str(args.max_queue)]
    cmd += ["--model-name", "load"]
    res = LoadResult(clients=args.clients)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(base_url, proc)
            for _ in range(3):  # warm-up: code paths, caches, allocator
                _one_request(base_url)
            res.rss_baseline_mb = rss_mb(proc.pid)
            peak = [res.rss_baseline_mb]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.25):
                    with contextlib.suppress(OSError):
                        peak[0] = max(peak[0], rss_mb(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            asyncio.run(_drive(base_url, args, res))
            res.duration_s = time.monotonic() - t0
            stop.set()
            sampler.join()
            res.rss_peak_mb = peak[0]
            res.engine_idle_after = _wait_idle(base_url)
            res.health_after = httpx.get(f"{base_url}/health", timeout=5).json() == {"status": "ok"}
            res.request_after = _one_request(base_url)
            metrics = httpx.get(f"{base_url}/metrics", timeout=5).text
            res.server_cancelled = _metric(metrics, "edgelm_cancelled_requests_total") or 0.0
            time.sleep(0.5)
            res.rss_after_mb = rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode not in (0, -15) and not res.errors:
                log.seek(0)
                res.errors.append(f"server exit {proc.returncode}: {log.read()[-2000:]!r}")
    ttfts = sorted(res.ttfts_ms)
    if ttfts:
        res.ttft_ms_p50 = ttfts[len(ttfts) // 2]
        res.ttft_ms_p95 = ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="a .gguf file (default: a tiny random model)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--clients", type=int, default=50, help="concurrent streaming clients (default 50)")
    p.add_argument("--slots", type=int, default=4, help="server slots (default 4)")
    p.add_argument("--ctx", type=int, default=1024, help="server context per slot (default 1024)")
    p.add_argument("--max-queue", type=int, default=16, help="server queue; beyond it 429 (default 16)")
    p.add_argument("--max-tokens", type=int, default=48, help="max_tokens drawn from 4..this (default 48)")
    p.add_argument("--disconnect", type=float, default=0.25, help="share of clients that hang up (0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the report here too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from edgelm.convert.synth import synthesize

            model = Path(tmp) / "tiny-qwen2-q8_0.gguf"
            synthesize("tiny-qwen2", "q8_0", model, seed=0)
        res = run_load_test(model, args)
    report = res.report()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print("PASS" if res.ok else "FAIL", file=sys.stderr)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`edgelm run` and `edgelm chat`: stream a model's text to the terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from edgelm.runtime.generate import GenerationChunk, Timings

__all__ = ["add_sampling_args", "cmd_chat", "cmd_run"]

CHAT_HELP = "commands: /reset clears the conversation, /quit leaves (Ctrl-C stops a reply, Ctrl-D leaves)"


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default 256)"
    )
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument("--ctx", type=int, default=None, help="context size (default min(model's, 4096))")
    p.add_argument("--threads", type=int, default=None, help="threads (default: physical cores)")


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_tokens": args.max_tokens,
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": args.seed,
    }


def format_timings(t: Timings) -> str:
    return (
        f"load {t.load_ms:.0f} ms | prompt {t.prompt_tokens} tokens in {t.prompt_ms:.0f} ms "
        f"({t.prompt_tokens_per_s:.1f} tok/s) | first token {t.ttft_ms:.0f} ms | "
        f"{t.decode_tokens} tokens at {t.decode_tokens_per_s:.1f} tok/s | kernels {t.backend}"
    )


def _stream(chunks: Iterator[GenerationChunk], out: TextIO) -> tuple[str, Timings | None]:
    text: list[str] = []
    timings: Timings | None = None
    for chunk in chunks:
        if chunk.text:
            out.write(chunk.text)
            out.flush()
            text.append(chunk.text)
        timings = chunk.timings
    return "".join(text), timings


def cmd_run(args: argparse.Namespace) -> int:
    import edgelm

    model = edgelm.load(args.model, n_ctx=args.ctx, n_threads=args.threads)
    if args.raw or model.tokenizer.vocab.chat_template is None:
        chunks = model.stream_generate(args.prompt, **_sampling(args))
    else:
        chunks = model.stream_chat([{"role": "user", "content": args.prompt}], **_sampling(args))
    try:
        _, timings = _stream(chunks, sys.stdout)
    except KeyboardInterrupt:
        print("\n[interrupted]", file=sys.stderr)
        return 130
    print()
    if timings is not None:
        print(format_timings(timings), file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    import edgelm

    model = edgelm.load(args.model, n_ctx=args.ctx, n_threads=args.threads)
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    print(f"{model!r}: {CHAT_HELP}", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        command = line.strip()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            history = history[:1] if args.system else []
            print("[conversation cleared]", file=sys.stderr)
            continue
        if not command:
            continue
        history.append({"role": "user", "content": line})
        reply = ""
        try:
            reply, timings = _stream(model.stream_chat(history, **_sampling(args)), sys.stdout)
            print()
            if timings is not None and args.verbose:
                print(format_timings(timings), file=sys.stderr)
        except KeyboardInterrupt:
            print("\n[reply stopped]", file=sys.stderr)
        except edgelm.EdgelmError as e:
            print(f"\n[error: {e}]", file=sys.stderr)
            history.pop()
            continue
        history.append({"role": "assistant", "content": reply})

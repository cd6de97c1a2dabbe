"""`edgelm run` and `edgelm chat`: stream a model's text to the terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from edgelm.runtime.generate import GenerationChunk, Timings

__all__ = ["add_sampling_args", "cmd_chat", "cmd_run", "load_model", "warn_settings"]

CHAT_HELP = (
    "commands: /help this list, /reset clears the conversation, /quit leaves (Ctrl-C stops a reply, "
    'Ctrl-D leaves); end a line with \\ to go on to the next, or write a block between """ lines'
)
CHAT_REPLY_ROOM = 64  # tokens kept free for the reply when old turns are dropped


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


def _read_text(path: str, flag: str) -> str:
    """A UTF-8 file a flag names; one that cannot be read is an error naming the flag."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


def _read_prompt(args: argparse.Namespace) -> str:
    """The prompt: `-p TEXT`, `-p -` (standard input) or `-f FILE`."""
    if args.file is not None:
        return _read_text(args.file, "-f")
    if args.prompt == "-":
        return sys.stdin.read()
    return str(args.prompt)


def _json_schema(path: str) -> Any:
    text = _read_text(path, "--json-schema")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"--json-schema {path}: not JSON ({e})") from None


def warn_settings(args: argparse.Namespace, context_length: int) -> None:
    """Warnings (on stderr, in the command line's words) for settings that work but hurt."""
    ctx = getattr(args, "ctx", None)
    if ctx is not None and ctx > context_length:
        print(
            f"edgelm: warning: --ctx {ctx} is beyond the {context_length} tokens the model was trained on; "
            "text past that is likely to degrade",
            file=sys.stderr,
        )
    threads = getattr(args, "threads", None)
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        print(
            f"edgelm: warning: --threads {threads} is more than the {cpus} CPUs here; threads will wait "
            "on each other",
            file=sys.stderr,
        )


def load_model(args: argparse.Namespace, path: Path | None = None) -> Any:
    """The model `args.model` names (a name is pulled first, with its own bar; `path` where the
    caller resolved it already), loaded under a spinner with `--ctx` / `--threads`, then the
    warnings those settings deserve."""
    import edgelm
    from edgelm.cli.progress import loading
    from edgelm.store import resolve_model

    path = path or resolve_model(args.model)  # before the spinner: a pull draws its own bar
    with loading(args.model):
        model = edgelm.load(path, n_ctx=args.ctx, n_threads=args.threads)
    warn_settings(args, model.config.context_length)
    return model


def cmd_run(args: argparse.Namespace) -> int:
    import edgelm

    if args.system is not None and args.raw:
        raise ValueError("--system goes through the chat template, which --raw turns off")
    prompt = _read_prompt(args)
    schema = _json_schema(args.json_schema) if args.json_schema else None
    model = load_model(args)
    chat = not args.raw and model.tokenizer.vocab.chat_template is not None
    if args.system is not None and not chat:
        raise ValueError(f"--system needs a chat template, and {args.model} has none")
    text = prompt
    if chat:
        messages = [{"role": "system", "content": args.system}] if args.system is not None else []
        text = model.chat_prompt([*messages, {"role": "user", "content": prompt}])
    kwargs = _sampling(args) | {"stop": args.stop, "truncate": args.truncate}
    if schema is not None or args.grammar:
        from edgelm.runtime.grammar import Grammar

        if schema is not None:
            grammar = Grammar.json_schema(schema, model.tokenizer, field=f"--json-schema {args.json_schema}")
        else:
            grammar = Grammar.lark(
                _read_text(args.grammar, "--grammar"), model.tokenizer, field=f"--grammar {args.grammar}"
            )
        kwargs["processors"] = [grammar.processor(max_tokens=args.max_tokens)]
    try:
        chunks = model.stream_generate(text, **kwargs)
    except edgelm.PromptTooLongError as e:
        n = len(model.encode_prompt(text))
        raise ValueError(
            f"the prompt has {n} tokens but the context holds {model.n_ctx} "
            f"(use a larger --ctx, or --truncate to keep its last {model.n_ctx - 1})"
        ) from e
    try:
        _, timings = _stream(chunks, sys.stdout)
    except KeyboardInterrupt:
        print("\n[interrupted]", file=sys.stderr)
        return 130
    print()
    if timings is not None:
        print(format_timings(timings), file=sys.stderr)
    return 0


def _read_message() -> str | None:
    """One message from the terminal: a line; a line ending in a backslash goes on to the next; a
    block between lines of three double quotes is taken whole (as Ollama reads it). None at the end."""
    try:
        line = input("> ")
        if line.strip() == '"""':
            lines: list[str] = []
            while (more := input(". ")).strip() != '"""':
                lines.append(more)
            return "\n".join(lines)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = input(". ")
        return "\n".join([*lines, line])
    except (EOFError, KeyboardInterrupt):
        return None


def _fit_history(model: Any, history: list[dict[str, str]], keep: int) -> int:
    """Drop the oldest turns after the first `keep` messages (the system message) until the prompt
    leaves room in the context for a reply; the number of messages dropped."""
    dropped = 0
    while len(history) > keep + 1:
        n = len(model.encode_prompt(model.chat_prompt(history)))
        if n < model.n_ctx - CHAT_REPLY_ROOM:
            break
        del history[keep]  # the oldest message after the system one
        dropped += 1
        while len(history) > keep + 1 and history[keep]["role"] != "user":
            del history[keep]  # a turn starts with the user
            dropped += 1
    return dropped


def cmd_chat(args: argparse.Namespace) -> int:
    import edgelm

    model = load_model(args)
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    keep = len(history)
    print(f"{model!r}: {CHAT_HELP}", file=sys.stderr)
    told = False
    while True:
        line = _read_message()
        if line is None:
            print(file=sys.stderr)
            return 0
        command = line.strip()
        if command in ("/quit", "/exit", "/bye"):
            return 0
        if command in ("/help", "/?"):
            print(CHAT_HELP, file=sys.stderr)
            continue
        if command == "/reset":
            history = history[:keep]
            print("[conversation cleared]", file=sys.stderr)
            continue
        if command.startswith("/") and " " not in command:
            print(f"[unknown command {command}; /help lists them]", file=sys.stderr)
            continue
        if not command:
            continue
        history.append({"role": "user", "content": line})
        if _fit_history(model, history, keep) and not told:
            print(
                "[the conversation outgrew the context: its oldest turns are dropped from now on "
                "(the system message is kept)]",
                file=sys.stderr,
            )
            told = True
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

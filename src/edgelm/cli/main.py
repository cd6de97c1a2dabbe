"""The `edgelm` command line: a thin layer that parses arguments and prints results."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from edgelm.cli.generate import add_sampling_args, cmd_chat, cmd_run, load_model
from edgelm.cli.store import add_store_commands, human_bytes
from edgelm.errors import EdgelmError

__all__ = ["main"]

# The flag that sets each parameter the API names in its errors.
CLI_FLAGS = {
    "n_ctx": "--ctx",
    "n_threads": "--threads",
    "max_tokens": "--max-tokens",
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repeat_penalty": "--repeat-penalty",
    "seed": "--seed",
    "prompt": "the prompt",
}
MAX_DEFAULT_SLOTS = 4
DEFAULT_SLOTS = max(1, min(MAX_DEFAULT_SLOTS, os.cpu_count() or 1))
MODEL_HELP = "a .gguf file, or a model's name (edgelm list --available), pulled on first use"
QUANT_CHOICES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")


def _human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def kernel_description() -> str:
    """Which kernels this machine runs, and why (the fast path, or the portable fallback)."""
    from edgelm.kernels.ops import ISA_ENV, select_ops

    ops = select_ops()
    forced = f", forced by {ISA_ENV}" if os.environ.get(ISA_ENV) else ""
    if ops.name == "numpy":
        why = forced or ": the native kernels are not built, portable NumPy fallback"
        return f"numpy{why}"
    return f"{ops.name} (native, {getattr(ops, 'n_threads', '?')} threads{forced})"


def cmd_info(args: argparse.Namespace) -> int:
    from edgelm.models.summary import summarize
    from edgelm.store import resolve_model

    s = summarize(resolve_model(args.model))
    print(f"file:          {s.path} ({human_bytes(s.file_size)}, GGUF v{s.gguf_version})")
    print(f"name:          {s.name or '-'}")
    print(f"architecture:  {s.arch or '-'}")
    print(f"parameters:    {_human_count(s.n_params)} ({s.n_params:,})")
    if s.config is not None:
        c = s.config
        print(
            f"shape:         {c.n_layers} layers, dim {c.dim}, ffn {c.ffn_dim}, "
            f"{c.n_heads} heads ({c.n_kv_heads} kv) x {c.head_dim}, vocab {c.vocab_size}"
        )
        if c.sliding_window:
            print(f"sliding window: {c.sliding_window} (every {c.sliding_window_pattern}th layer global)")
        print(f"tied output:   {'yes' if c.tied_embeddings else 'no'}")
    print(f"context:       {s.context_length if s.context_length is not None else '-'}")
    vocab = f", {s.vocab_size} tokens" if s.vocab_size is not None else ""
    print(f"tokenizer:     {s.tokenizer}{vocab}")
    print(f"chat template: {'yes' if s.chat_template else 'no'}")
    print("quantization:")
    for share in s.quant_mix:
        pct = 100.0 * share.n_bytes / max(1, sum(x.n_bytes for x in s.quant_mix))
        print(
            f"  {share.type_name:<6} {share.n_tensors:>5} tensors  {human_bytes(share.n_bytes):>9}  "
            f"{pct:5.1f}%  {_human_count(share.n_params):>7} params"
        )
    if s.problem is not None:
        print(f"runnable:      no: {s.problem}")
    print(f"kernels:       {kernel_description()}")
    repacked = _repacked_types([share.type_name for share in s.quant_mix])
    if repacked:
        print(f"repacked:      {', '.join(repacked)} matrices, at load (16 rows interleaved)")
    return 0


def _repacked_types(type_names: list[str]) -> list[str]:
    """Which of these tensor types the kernels in use repack at load."""
    from edgelm.kernels.ops import select_ops

    ops = select_ops()
    known = {t.name for t in getattr(ops, "repacked_types", [])}
    return [name for name in type_names if name in known]


def cmd_synth(args: argparse.Namespace) -> int:
    from edgelm.cli.progress import tensor_progress
    from edgelm.convert.synth import synthesize

    with tensor_progress(f"synth {args.like} {args.quant}") as bar:
        r = synthesize(
            args.like,
            args.quant,
            args.output,
            vocab=args.vocab,
            seed=args.seed,
            on_tensor=bar.on_tensor,
            on_plan=bar.on_plan,
        )
    print(
        f"wrote {r.path}: {r.config.arch} like {args.like}, {_human_count(r.n_params)} params, "
        f"{args.quant}, {human_bytes(r.n_bytes)}"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgelm.cli.progress import tensor_progress
    from edgelm.convert.quantize_file import quantize_file

    quantized = _quantized_matrix_types(args.input)
    if quantized and not args.allow_requantize:
        raise ValueError(
            f"{args.input} is already quantized ({', '.join(quantized)}): quantizing it again compounds the "
            "error of both; quantize from the F32/F16/BF16 file, or pass --allow-requantize"
        )
    with tensor_progress(f"quantize {args.type}") as bar:
        r = quantize_file(args.input, args.output, args.type, on_tensor=bar.on_tensor, on_plan=bar.on_plan)
    print(f"wrote {r.path}: {human_bytes(r.in_bytes)} -> {human_bytes(r.out_bytes)} ({args.type})")
    return 0


def _quantized_matrix_types(path: str) -> list[str]:
    """The quantized types of a model file's matrices (empty for an F32/F16/BF16 file)."""
    from edgelm.gguf.constants import GGMLType
    from edgelm.gguf.reader import GGUFFile

    float_types = {GGMLType.F32, GGMLType.F16, GGMLType.BF16}
    found = {t.ggml_type for t in GGUFFile.open(path).tensors.values() if len(t.shape) > 1}
    return sorted(t.name for t in found - float_types)


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgelm.bench.speed import run_speed
    from edgelm.cli.progress import stage_log

    with stage_log("bench speed") as log:
        run_speed(
            tuple(m.strip() for m in args.models.split(",") if m.strip()),
            tuple(q.strip() for q in args.quants.split(",") if q.strip()),
            threads=args.threads,
            n_prompt=args.prompt,
            n_gen=args.gen,
            reps=args.reps,
            cache_dir=Path(args.cache_dir) if args.cache_dir else None,
            out=Path(args.output),
            log=log,
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from edgelm.server import create_app, serve
    except ImportError as e:
        print(
            f"edgelm: error: serve needs the server extra (pip install 'edgelm[server]'): {e}",
            file=sys.stderr,
        )
        return 1
    from edgelm.api.model import check_kv_memory
    from edgelm.store import resolve_model

    path = resolve_model(args.model)  # a name is pulled now, before the port is bound
    if not path.is_file():
        raise ValueError(f"{args.model}: no such file")
    # Loaded before the port is bound: a model that cannot load ends the process with its error.
    model = load_model(args, path)
    check_kv_memory(model.transformer, model.n_ctx, args.slots)
    if model.tokenizer.vocab.chat_template is not None:
        model.tokenizer.chat_template.check()  # a template that cannot render in bounds is refused now
    app = create_app(
        model,
        api_key=args.api_key or None,
        n_slots=args.slots,
        max_queue=args.max_queue,
        model_name=args.model_name or (path.stem if Path(args.model).exists() else args.model),
        max_tokens=args.max_tokens,
    )
    try:
        serve(app, host=args.host, port=args.port)
    except OSError as e:
        raise EdgelmError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    from edgelm import __version__
    from edgelm.convert.presets import PRESETS

    p = argparse.ArgumentParser(prog="edgelm", description="Small language models on the device.")
    p.add_argument("--version", action="version", version=f"edgelm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a GGUF model file")
    info.add_argument("model", help=MODEL_HELP)
    info.set_defaults(func=cmd_info)

    synth = sub.add_parser("synth", help="write a random-weight model with the shapes of a real one")
    synth.add_argument(
        "--like", required=True, choices=list(PRESETS), metavar="NAME", help=f"one of: {', '.join(PRESETS)}"
    )
    synth.add_argument("--quant", default="q8_0", choices=QUANT_CHOICES, help="quantization (default q8_0)")
    synth.add_argument("--vocab", help="copy the tokenizer of this (vocab-only) GGUF file")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("-o", "--output", required=True, help="output .gguf path")
    synth.set_defaults(func=cmd_synth)

    run = sub.add_parser("run", help="generate text from a prompt, streamed, then timings")
    run.add_argument("model", help=MODEL_HELP)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("-p", "--prompt", help="the prompt ('-': read it from standard input)")
    source.add_argument("-f", "--file", help="read the prompt from this file")
    run.add_argument(
        "--raw",
        action="store_true",
        help="complete the prompt as it is (default: as a user message through the model's chat template, "
        "where the model has one)",
    )
    run.add_argument("--system", default=None, help="a system message (through the chat template)")
    run.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop before this text (repeatable)"
    )
    run.add_argument(
        "--truncate", action="store_true", help="keep the end of a prompt longer than the context"
    )
    shape = run.add_mutually_exclusive_group()
    shape.add_argument(
        "--json-schema", metavar="FILE", help="answer with JSON valid against this JSON Schema"
    )
    shape.add_argument("--grammar", metavar="FILE", help="answer in this grammar (llguidance's Lark syntax)")
    add_sampling_args(run)
    run.set_defaults(func=cmd_run)

    chat = sub.add_parser("chat", help="interactive chat through the model's chat template")
    chat.add_argument("model", help=MODEL_HELP)
    chat.add_argument("--system", default=None, help="a system message")
    chat.add_argument("-v", "--verbose", action="store_true", help="print timings after each reply")
    add_sampling_args(chat)
    chat.set_defaults(func=cmd_chat)

    bench = sub.add_parser("bench", help="benchmarks against llama.cpp on the same files")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    speed = bench_sub.add_parser("speed", help="prefill/decode speed, first-token latency, memory")
    speed.add_argument(
        "--models",
        default="smollm2-135m,qwen2.5-0.5b,llama-3.2-1b",
        help="comma-separated synth presets (random weights, written per quant) or stored model names "
        "and .gguf files (measured as they are)",
    )
    speed.add_argument("--quants", default="q8_0,q4_k_m", help="comma-separated quantizations")
    speed.add_argument("--threads", type=int, default=2)
    speed.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    speed.add_argument("--gen", type=int, default=128, help="generated tokens (default 128)")
    speed.add_argument("--reps", type=int, default=3)
    speed.add_argument("--cache-dir", default=None, help="where model files are written (reused)")
    speed.add_argument("-o", "--output", default="benchmarks/results/speed.json", help="JSON results")
    speed.set_defaults(func=cmd_bench_speed)

    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (/v1/chat/completions, ...)")
    srv.add_argument("model", help=MODEL_HELP)
    srv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    srv.add_argument("--port", type=_port, default=8080)
    srv.add_argument(
        "--api-key",
        default=os.environ.get("EDGELM_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $EDGELM_API_KEY)",
    )
    srv.add_argument(
        "--slots",
        type=_positive,
        default=DEFAULT_SLOTS,
        help=f"sequences decoded together (default: the CPU count, at most {MAX_DEFAULT_SLOTS}; "
        f"here {DEFAULT_SLOTS})",
    )
    srv.add_argument(
        "--max-tokens",
        type=_positive,
        default=None,
        help="the most tokens one request may generate (default: the context)",
    )
    srv.add_argument("--ctx", type=int, default=None, help="context per slot (default: min(model's, 4096))")
    srv.add_argument("--max-queue", type=int, default=64, help="requests that may wait; beyond: 429")
    srv.add_argument("--model-name", default=None, help="the id clients send as `model` (default: file stem)")
    srv.add_argument("--threads", type=int, default=None)
    srv.set_defaults(func=cmd_serve)

    add_store_commands(sub)

    quant = sub.add_parser("quantize", help="quantize a model file to a smaller type")
    quant.add_argument("input")
    quant.add_argument("output")
    quant.add_argument("--type", required=True, choices=QUANT_CHOICES)
    quant.add_argument(
        "--allow-requantize", action="store_true", help="quantize a file that is already quantized"
    )
    quant.set_defaults(func=cmd_quantize)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edgelm.runtime.sampling import InvalidParamError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidParamError as e:  # said in the command line's words: the flag, not the parameter
        flag = CLI_FLAGS.get(e.field, e.field)
        why = str(e).split(": ", 1)[-1]
        print(f"edgelm: error: {flag} {e.value}: {why}", file=sys.stderr)
        return 1
    except EdgelmError as e:
        print(f"edgelm: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"edgelm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgelm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

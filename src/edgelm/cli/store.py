"""`edgelm pull`, `edgelm list`, `edgelm rm`: the model store from the command line."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["add_store_commands", "human_bytes"]


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, time.time() - t)
    for unit, secs in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= secs:
            n = int(s // secs)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def cmd_pull(args: argparse.Namespace) -> int:
    from edgelm.store import ModelStore, parse_ref
    from edgelm.store.progress import TerminalProgress

    store = ModelStore()
    for name in args.names:
        ref = parse_ref(name)
        stored = store.get(name) is not None
        source = ref.source if ref else None
        with TerminalProgress(
            ref.name if ref else name, source=source, quiet=ref is None or stored
        ) as events:
            m = store.pull(name, events, force=args.force)
        print(f"{m.name}: {human_bytes(m.size)}, {m.quant}, {m.arch}, sha256 {m.sha256[:12]}, {m.path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from edgelm.store import CATALOGUE, ModelStore
    from edgelm.store.catalogue import DEFAULT_TAGS

    store = ModelStore()
    if args.available:
        have = {m.name for m in store.models()}
        rows = [("NAME", "SIZE", "QUANT", "ARCH", "SOURCE", "")]
        for e in CATALOGUE.values():
            default = " (default)" if DEFAULT_TAGS.get(e.family) == e.name.split(":", 1)[1] else ""
            size = human_bytes(e.size) if e.size else "?"
            rows.append(
                (e.name + default, size, e.quant, e.arch, e.source.ref, "pulled" if e.name in have else "")
            )
        _table(rows)
        return 0
    models = store.models()
    if not models:
        print(
            f"no models in {store.home} (edgelm pull NAME; edgelm list --available shows the names)",
            file=sys.stderr,
        )
        return 0
    rows = [("NAME", "SIZE", "QUANT", "ARCH", "SOURCE", "LAST USED")]
    rows += [(m.name, human_bytes(m.size), m.quant, m.arch, m.source, _ago(m.last_used)) for m in models]
    _table(rows)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from edgelm.store import ModelStore

    store = ModelStore()
    for name in args.names:
        m = store.remove(name)
        print(f"removed {m.name} ({human_bytes(m.size)})")
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def add_store_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pull = sub.add_parser("pull", help="fetch models by name into the store (verified, resumable)")
    pull.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="a catalogue name, hf:OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT",
    )
    pull.add_argument("--force", action="store_true", help="fetch again even if the model is stored")
    pull.set_defaults(func=cmd_pull)

    lst = sub.add_parser("list", aliases=["ls"], help="the models in the store")
    lst.add_argument("--available", action="store_true", help="the catalogue's names instead")
    lst.set_defaults(func=cmd_list)

    rm = sub.add_parser("rm", help="remove models from the store")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=cmd_rm)

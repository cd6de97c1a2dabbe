"""GGUF files on the Hugging Face Hub, found through `huggingface_hub`.

`huggingface_hub` decides the endpoint (`HF_ENDPOINT`), the token (`HF_TOKEN` or a saved login) and
offline mode (`HF_HUB_OFFLINE`); it resolves a file to its address, size and sha256 (the Hub's etag
of a large file is its sha256) and lists a repository's files to find one quantization. The bytes
themselves are brought by `edgelm.store.download`, which resumes a cut transfer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from edgelm.store.catalogue import HubFile
from edgelm.store.errors import DownloadError, StoreError

__all__ = ["HubTarget", "hub_offline", "quant_of", "resolve_file", "resolve_quant"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


@dataclass(frozen=True)
class HubTarget:
    """A Hub file made concrete: where to fetch it, and what it must be."""

    file: HubFile
    url: str
    headers: dict[str, str]
    size: int | None
    sha256: str | None


def _hf() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError as e:
        raise StoreError(f"models from the Hugging Face Hub need huggingface_hub ({e})") from None
    return huggingface_hub


def _endpoint() -> str:
    hf = _hf()
    return (os.environ.get("HF_ENDPOINT") or hf.constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on") or bool(_hf().constants.HF_HUB_OFFLINE)


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _check_online(what: str) -> None:
    if hub_offline():
        raise DownloadError(f"{what}: not in the store, and the Hub is off (HF_HUB_OFFLINE is set)")


def _hub_error(what: str, e: BaseException) -> StoreError:
    hf = _hf()
    errors = hf.errors
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, getattr(errors, "GatedRepoError", ())):
        return DownloadError(f"{what}: a gated repository (accept its terms on the Hub and set HF_TOKEN)")
    if isinstance(e, getattr(errors, "RepositoryNotFoundError", ())):
        return DownloadError(f"{what}: no such repository on {_endpoint()} (or it is private: set HF_TOKEN)")
    if isinstance(e, getattr(errors, "RevisionNotFoundError", ())):
        return DownloadError(f"{what}: no such revision on {_endpoint()}")
    if status == 404 or isinstance(e, getattr(errors, "EntryNotFoundError", ())):
        return DownloadError(f"{what}: no such file on {_endpoint()}")
    if status is not None:
        return DownloadError(f"{what}: {_endpoint()} answered HTTP {status}")
    if isinstance(e, getattr(errors, "OfflineModeIsEnabled", ())):
        return DownloadError(f"{what}: not in the store, and the Hub is off (HF_HUB_OFFLINE is set)")
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return DownloadError(f"{what}: cannot reach {_endpoint()} ({reason})")


def resolve_file(file: HubFile) -> HubTarget:
    """Address, size and sha256 of one Hub file (a HEAD request)."""
    _check_online(file.ref)
    hf = _hf()
    endpoint = _endpoint()
    url = hf.hf_hub_url(file.repo, file.filename, revision=file.revision, endpoint=endpoint)
    try:
        meta = hf.get_hf_file_metadata(url, token=_token(), endpoint=endpoint)
    except Exception as e:
        raise _hub_error(file.ref, e) from None
    etag = (meta.etag or "").lower()
    headers = dict(hf.utils.build_hf_headers(token=_token()))
    return HubTarget(file, url, headers, meta.size, etag if _SHA256.match(etag) else None)


def resolve_quant(repo: str, quant: str, revision: str = "main") -> HubFile:
    """The GGUF file of `repo` in quantization `quant` (`q4_k_m`, ...): one file, not split parts."""
    what = f"{repo}:{quant}"
    _check_online(what)
    hf = _hf()
    try:
        api = hf.HfApi(endpoint=_endpoint(), token=_token())
        paths = [
            f.path for f in api.list_repo_tree(repo, recursive=True, revision=revision) if hasattr(f, "size")
        ]
    except Exception as e:
        raise _hub_error(what, e) from None
    ggufs = [p for p in paths if p.lower().endswith(".gguf") and "mmproj" not in p.lower()]
    tag = quant.lower()
    hits = [p for p in ggufs if re.search(rf"(^|[^a-z0-9]){re.escape(tag)}([^a-z0-9]|$)", p.lower())]
    whole = [p for p in hits if not _SPLIT.search(p.lower())]
    if not hits:
        have = sorted({quant_of(p) for p in ggufs} - {""})
        listed = f"; it has {', '.join(have)}" if have else "; it has no .gguf files"
        raise DownloadError(f"{what}: no {quant.upper()} GGUF file in {repo}{listed}")
    if not whole:
        raise DownloadError(f"{what}: {repo} has {quant.upper()} only as split files ({hits[0]}, ...)")
    return HubFile(repo, min(whole, key=len), revision)


def quant_of(path: str) -> str:
    """The quantization a GGUF file's name says (`...-Q4_K_M.gguf` -> "Q4_K_M"), "" if none."""
    m = re.search(r"((?:i?q|f|bf)\d[0-9a-z_]*)\.gguf$", path.lower().rsplit("/", 1)[-1].replace("-", "_"))
    return m.group(1).upper() if m else ""

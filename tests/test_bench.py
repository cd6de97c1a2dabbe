"""`edgelm bench speed` end to end on a tiny model, and the llama.cpp AMX guard."""

from __future__ import annotations

import json
import math

import pytest

from edgelm.bench import rival
from edgelm.bench.speed import ENGINES, format_table, kv_cache_bytes, run_speed


@pytest.mark.llama_cpp
def test_speed_run_measures_both_engines(tmp_path) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / "speed.json"
    logged: list[str] = []
    kw = {"n_prompt": 24, "n_gen": 8, "reps": 1, "cache_dir": tmp_path, "out": out, "log": logged.append}
    report = run_speed(("tiny-llama",), ("q8_0",), **kw)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    (row,) = report["results"]
    path = tmp_path / "tiny-llama-q8_0.gguf"
    assert row["file_mb"] == path.stat().st_size / 1e6
    assert row["rss_limit_mb"] == pytest.approx((path.stat().st_size + kv_cache_bytes(path)) * 1.15 / 2**20)
    for engine in ENGINES:
        r = row[engine]
        assert "error" not in r, r
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["ttft_s"] < 60 and 0 < r["load_to_first_token_s"] < 60
        assert row["bandwidth_gb_s"][engine] > 0
        bound = row["bandwidth_gb_s"][engine] * 1e9 / row["decode_bytes_per_token"]
        assert row["bound_share"][engine] == pytest.approx(r["decode_tok_s"] / bound)
    e, ll = row["edgelm"], row["llama.cpp"]
    assert row["ratio"]["decode_tok_s"] == pytest.approx(e["decode_tok_s"] / ll["decode_tok_s"])
    assert row["ratio"]["ttft_s"] == pytest.approx(ll["ttft_s"] / e["ttft_s"])  # > 1: edgelm ahead
    table = format_table(report)
    assert report["cpu"] in table.splitlines()[0] and "tiny-llama" in table
    assert all(f"note: {n}" in table for n in report["notes"])


def test_ratio_of_a_failed_engine_is_nan() -> None:
    from edgelm.bench.speed import _ratio

    assert math.isnan(_ratio("decode_tok_s", 0.0, 5.0))
    assert _ratio("peak_rss_mb", 100.0, 150.0) == 1.5


def test_amx_guard_turns_off_extra_buffer_types(monkeypatch) -> None:
    lib = pytest.importorskip("llama_cpp.llama_cpp")
    monkeypatch.setattr(rival, "_cpu_has_amx", lambda: False)
    monkeypatch.setattr(rival, "_built_with_amx", lambda: True)
    assert rival.avoid_amx() is None  # no AMX on the CPU: nothing to avoid
    monkeypatch.setattr(rival, "_cpu_has_amx", lambda: True)
    monkeypatch.setattr(lib, "llama_model_default_params", lib.llama_model_default_params)  # restored after
    note = rival.avoid_amx()
    assert note is not None and "AMX" in note and rival.AMX_FREE_CMAKE_ARGS in note
    assert lib.llama_model_default_params().use_extra_bufts is False
    wrapper = lib.llama_model_default_params
    assert rival.avoid_amx() == note and lib.llama_model_default_params is wrapper  # twice: one wrapper


def test_this_build_and_cpu_are_read() -> None:
    pytest.importorskip("llama_cpp")
    # Both answers come from the machine; they must at least be booleans and agree with each other.
    assert isinstance(rival._cpu_has_amx(), bool) and isinstance(rival._built_with_amx(), bool)
    assert rival.amx_build_on_amx_cpu() == (rival._cpu_has_amx() and rival._built_with_amx())


def test_ci_builds_llama_cpp_with_the_same_flags() -> None:
    from conftest import REPO

    ci = (REPO / ".ci" / "run").read_text()
    assert f"export CMAKE_ARGS='{rival.AMX_FREE_CMAKE_ARGS}'" in ci


def test_speed_cases_take_presets_paths_and_stored_names(tmp_path, tiny_model, monkeypatch) -> None:
    """A preset is written per quantization; a .gguf path and a stored model's name are measured as they
    are (the name resolved through the store, its quantization from the store)."""
    import shutil

    from edgelm.bench.speed import _cases
    from edgelm.store import ModelStore

    home = tmp_path / "store"
    monkeypatch.setenv("EDGELM_HOME", str(home))
    file = tiny_model("tiny-llama", "q4_0")
    blob = home / "blobs" / "sha256-0.gguf"
    blob.parent.mkdir(parents=True)
    shutil.copy(file, blob)
    (home / "manifests").mkdir()
    stored = {"name": "hf:me/tiny:q4_0", "path": "blobs/sha256-0.gguf", "size": blob.stat().st_size}
    stored |= {"sha256": "0", "quant": "Q4_0", "arch": "llama", "source": "hf:me/tiny/t.gguf"}
    stored |= {"pulled_at": 0.0, "last_used": None}
    (home / "manifests" / "hf%3Ame%2Ftiny%3Aq4_0.json").write_text(json.dumps(stored))
    assert ModelStore().get("me/tiny:q4_0") is not None
    cases = _cases(("tiny-llama", str(file), "me/tiny:Q4_0"), ("q8_0", "f16"), tmp_path, lambda s: None)
    assert [(c.model, c.quant) for c in cases] == [
        ("tiny-llama", "q8_0"),
        ("tiny-llama", "f16"),
        (str(file), "file"),
        ("me/tiny:Q4_0", "q4_0"),
    ]
    assert cases[2].path == file and cases[3].path == blob
    assert (tmp_path / "tiny-llama-f16.gguf").is_file()

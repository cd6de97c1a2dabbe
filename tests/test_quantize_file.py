"""`edgelm quantize`: llama.cpp's mixes and bytes, metadata kept, files llama.cpp loads."""

from __future__ import annotations

import ctypes

import gguf
import numpy as np
import pytest

from edgelm.cli.main import main
from edgelm.convert.mix import FileType
from edgelm.convert.quantize_file import quantize_file
from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.constants import GGMLType
from edgelm.gguf.reader import GGUFFile
from edgelm.models.model_file import ModelFile

QUANTS = ["q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "bf16"]


def _llama_cpp_quantize(src, dst, ftype: FileType) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype.file_type)
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
@pytest.mark.parametrize("quant", QUANTS)
def test_same_types_and_bytes_as_llama_cpp(tiny_model, tmp_path, preset: str, quant: str) -> None:
    src = tiny_model(preset, "f16")
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    quantize_file(src, ours, quant)
    _llama_cpp_quantize(src, theirs, FileType.parse(quant))
    a, b = GGUFFile.open(ours), GGUFFile.open(theirs)
    assert a.tensors.keys() == b.tensors.keys()
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.ggml_type, ta.ne) == (tb.ggml_type, tb.ne), name
        assert np.array_equal(a.tensor_data(name), b.tensor_data(name)), f"{name} ({ta.ggml_type.name})"
    assert a.metadata[keys.FILE_TYPE] == b.metadata[keys.FILE_TYPE]


def test_mixes_on_real_shapes_fall_back_like_llama_cpp() -> None:
    """Qwen2.5-0.5B's width 896 is not a multiple of 256: its K-quant tensors fall back to 32-blocks."""
    from edgelm.convert.mix import TensorSlot, choose_types
    from edgelm.convert.presets import PRESETS
    from edgelm.models.layout import expected_tensors

    cfg = PRESETS["qwen2.5-0.5b"].config
    slots = [
        TensorSlot(s.name, s.ne, GGMLType.F16 if len(s.ne) > 1 else GGMLType.F32)
        for s in expected_tensors(cfg)
    ]
    types = choose_types(slots, FileType.Q4_K_M)
    assert types["token_embd.weight"] == GGMLType.Q8_0  # tied head: Q6_K wanted, 896 % 256 != 0
    assert types["blk.0.attn_q.weight"] == GGMLType.Q5_0  # Q4_K's fallback
    assert types["blk.0.ffn_down.weight"] == GGMLType.Q6_K  # 4864 = 19 * 256: no fallback, more bits
    assert types["blk.3.ffn_down.weight"] == GGMLType.Q4_K
    assert types["blk.0.attn_norm.weight"] == GGMLType.F32


def test_quantized_tensors_dequantize_like_gguf_and_near_the_source(tiny_model, tmp_path) -> None:
    src = tiny_model("tiny-llama", "f16")
    out = tmp_path / "q.gguf"
    quantize_file(src, out, "q4_k_m")
    s, q = ModelFile.open(src), ModelFile.open(out)
    seen = set()
    for name, t in q.tensors.items():
        ref = gguf.quants.dequantize(t.data, t.ggml_type).reshape(t.shape)
        ours = t.dequantize()
        assert np.array_equal(ours, ref), name
        orig = s.tensors[name].dequantize()
        rel = np.sqrt(np.mean((ours - orig) ** 2) / np.mean(orig**2))
        assert rel < 0.12, (name, t.ggml_type.name, rel)
        seen.add(t.ggml_type)
    assert {GGMLType.Q4_K, GGMLType.Q6_K} <= seen


def test_metadata_kept_and_file_type_set(tiny_model, tmp_path) -> None:
    src = tiny_model("tiny-qwen3", "f16")
    out = tmp_path / "q.gguf"
    quantize_file(src, out, "q8_0")
    a, b = GGUFFile.open(src), GGUFFile.open(out)
    assert b.metadata[keys.FILE_TYPE] == int(FileType.Q8_0.file_type)
    for key, value in a.metadata.items():
        if key == keys.FILE_TYPE:
            continue
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(b.metadata[key], value)
        else:
            assert b.metadata[key] == value, key


@pytest.mark.parametrize("quant", ["q4_k_m", "q6_k"])
def test_llama_cpp_loads_quantized_output(tiny_model, tmp_path, quant: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    out = tmp_path / "q.gguf"
    quantize_file(tiny_model("tiny-qwen2", "f16"), out, quant)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(b"hello there", add_bos=True)
    llm.eval(tokens)
    assert np.isfinite(np.asarray(llm.scores[: len(tokens)])).all()


def test_refuses_to_overwrite_its_input(tiny_model, tmp_path) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(tiny_model("tiny-llama", "f16").read_bytes())
    before = src.read_bytes()
    with pytest.raises(ModelFileError, match="overwrite"):
        quantize_file(src, src, "q8_0")
    assert src.read_bytes() == before


def test_cli_quantize_and_bad_type(tiny_model, tmp_path, capsys) -> None:
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(tiny_model("tiny-llama", "f16")), str(out), "--type", "q6_k"]) == 0
    assert ModelFile.open(out).tensors["blk.0.attn_q.weight"].ggml_type == GGMLType.Q6_K
    with pytest.raises(SystemExit):
        main(["quantize", str(out), str(tmp_path / "x.gguf"), "--type", "q3_weird"])
    assert "invalid choice" in capsys.readouterr().err

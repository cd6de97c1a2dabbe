"""`edgelm info`: what a user sees about a model file."""

from __future__ import annotations

import pytest

from conftest import write_mini_model
from edgelm.cli.main import main
from edgelm.convert.synth import synthesize
from edgelm.gguf import keys
from edgelm.gguf.constants import GGUFValueType
from edgelm.gguf.reader import GGUFFile, MetaField
from edgelm.gguf.writer import PlannedTensor, write_gguf


def test_info_of_a_synthetic_model(tmp_path, capsys) -> None:
    path = tmp_path / "m.gguf"
    synthesize("tiny-qwen2", "q4_k_m", path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "architecture:  qwen2" in out
    assert "1.3M" in out and "1,313,024" in out
    assert "Q4_K" in out and "Q6_K" in out and "F32" in out
    assert "chat template: yes" in out
    assert "tokenizer:     gpt2 (pre: default), 512 tokens" in out
    assert "context:       2048" in out
    assert "runnable" not in out
    assert "kernels:" in out


def test_info_says_which_kernels_run(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "m.gguf"
    synthesize("tiny-llama", "q8_0", path)
    monkeypatch.setenv("EDGELM_ISA", "numpy")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kernels:       numpy, forced by EDGELM_ISA" in out
    assert "repacked:" not in out  # the NumPy kernels read the file as it is


def test_info_says_which_types_are_repacked(tmp_path, capsys) -> None:
    from edgelm.kernels.ops import select_ops

    ops = select_ops()
    if "Q8_0" not in {t.name for t in getattr(ops, "repacked_types", [])}:
        pytest.skip(f"the {ops.name} kernels repack no Q8_0 weights")
    path = tmp_path / "m.gguf"
    synthesize("tiny-llama", "q8_0", path)
    assert main(["info", str(path)]) == 0
    assert "repacked:      Q8_0 matrices, at load" in capsys.readouterr().out


def test_info_reports_why_a_file_cannot_run(tmp_path, capsys) -> None:
    src = GGUFFile.open(write_mini_model(tmp_path / "a.gguf"))
    fields = dict(src.fields)
    fields[keys.TOKENIZER_TOKENS] = MetaField("not-a-list", GGUFValueType.STRING)
    fields[keys.ARCHITECTURE] = MetaField("mamba", GGUFValueType.STRING)
    tensors = [
        PlannedTensor(t.name, t.ggml_type, t.shape, lambda n=t.name: src.tensor_data(n))
        for t in src.tensors.values()
    ]
    out_path = tmp_path / "b.gguf"
    write_gguf(out_path, "mamba", fields, tensors)
    assert main(["info", str(out_path)]) == 0
    out = capsys.readouterr().out
    assert "architecture:  mamba" in out
    assert "runnable:      no: unknown architecture 'mamba'" in out

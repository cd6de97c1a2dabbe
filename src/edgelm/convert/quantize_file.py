"""`edgelm quantize`: a model file to a smaller one, with llama.cpp's per-tensor mixes.

Each tensor is dequantized to float32 and quantized to its type in the mix, one tensor at a time;
tensors whose type does not change are copied byte for byte.  All metadata is kept, except the file
type, which is set to the new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelm.convert.mix import FileType, TensorSlot, choose_types
from edgelm.convert.synth import QUANTIZATION_VERSION
from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.constants import GGMLType, GGUFValueType
from edgelm.gguf.reader import MetaField
from edgelm.gguf.writer import PlannedTensor, write_gguf
from edgelm.models.model_file import ModelFile
from edgelm.weights.qtensor import QTensor
from edgelm.weights.quantize import quantize

__all__ = ["QuantizeResult", "quantize_file"]


@dataclass(frozen=True)
class QuantizeResult:
    path: str
    in_bytes: int
    out_bytes: int
    types: dict[str, GGMLType]


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _producer(t: QTensor, new_type: GGMLType) -> Callable[[], np.ndarray]:
    if new_type == t.ggml_type:
        return lambda: t.data
    return lambda: quantize(t.dequantize(), new_type)


def quantize_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    quant: str,
    *,
    on_tensor: Callable[[PlannedTensor], None] | None = None,
    on_plan: Callable[[list[PlannedTensor]], None] | None = None,
) -> QuantizeResult:
    ftype = FileType.parse(quant)
    if _same_file(src, dst):
        raise ModelFileError(dst, "output would overwrite the input model; choose another output path")
    model = ModelFile.open(src)
    f = model.gguf
    slots = [TensorSlot(i.name, i.ne, i.ggml_type) for i in f.tensors.values()]
    types = choose_types(slots, ftype)
    fields = dict(f.fields)
    fields[keys.FILE_TYPE] = MetaField(int(ftype.file_type), GGUFValueType.UINT32)
    fields[keys.QUANTIZATION_VERSION] = MetaField(QUANTIZATION_VERSION, GGUFValueType.UINT32)
    planned = [
        PlannedTensor(t.name, types[t.name], t.shape, _producer(t, types[t.name]))
        for t in model.tensors.values()
    ]
    write_gguf(dst, model.config.arch, fields, planned, on_tensor=on_tensor, on_plan=on_plan)
    return QuantizeResult(os.fspath(dst), f.file_size, os.path.getsize(dst), types)

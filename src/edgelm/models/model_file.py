"""Open a model file: metadata → config, tensors → packed `QTensor`s, every shape and type checked."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgelm.errors import ModelFileError
from edgelm.gguf.constants import SUPPORTED_TYPES
from edgelm.gguf.reader import GGUFFile
from edgelm.models.config import ModelConfig
from edgelm.models.layout import expected_tensors
from edgelm.weights.qtensor import QTensor

__all__ = ["ModelFile"]


@dataclass(frozen=True)
class ModelFile:
    """A checked model file: blueprint plus read-only packed weights (nothing copied or dequantized)."""

    path: str
    gguf: GGUFFile
    config: ModelConfig
    tensors: dict[str, QTensor]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ModelFile:
        f = GGUFFile.open(path)
        config = ModelConfig.from_gguf(f)
        return cls(f.path, f, config, load_tensors(f, config))


def load_tensors(f: GGUFFile, config: ModelConfig) -> dict[str, QTensor]:
    """Wrap every tensor of `f` after checking it against `config`."""
    supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
    for info in f.tensors.values():
        if info.ggml_type not in SUPPORTED_TYPES:
            raise ModelFileError(
                f.path,
                f"tensor {info.name!r} has unsupported type {info.ggml_type.name} (supported: {supported})",
            )
    for spec in expected_tensors(config):
        info = f.tensors.get(spec.name)
        if info is None:
            if spec.optional:
                continue
            raise ModelFileError(f.path, f"missing tensor {spec.name!r} (a {config.arch} model has it)")
        if info.ne != spec.ne:
            raise ModelFileError(
                f.path,
                f"tensor {spec.name!r} has shape {list(info.ne)} "
                f"but the model's metadata implies {list(spec.ne)}",
            )
    return {
        info.name: QTensor.from_buffer(info.name, info.ggml_type, info.shape, f.tensor_data(info.name))
        for info in f.tensors.values()
    }

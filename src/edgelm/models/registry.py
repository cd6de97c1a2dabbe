"""Architecture string → architecture module, resolved once at load."""

from __future__ import annotations

from edgelm.errors import ModelFileError
from edgelm.kernels.ops import Ops
from edgelm.models import gemma3, llama, qwen2, qwen3
from edgelm.models.model_file import ModelFile
from edgelm.models.transformer import Architecture, Transformer

__all__ = ["ARCHITECTURE_MODULES", "build_model"]

ARCHITECTURE_MODULES: dict[str, Architecture] = {
    a.name: a for a in (llama.ARCH, qwen2.ARCH, qwen3.ARCH, gemma3.ARCH)
}


def build_model(mf: ModelFile, ops: Ops | None = None) -> Transformer:
    arch = ARCHITECTURE_MODULES.get(mf.config.arch)
    if arch is None:
        supported = ", ".join(sorted(ARCHITECTURE_MODULES))
        raise ModelFileError(
            mf.path, f"no forward pass for architecture {mf.config.arch!r} (supported: {supported})"
        )
    return Transformer.from_model_file(mf, arch, ops)

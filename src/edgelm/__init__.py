"""edgelm: small language models on the device, with the lowest latency."""

from edgelm.api.model import Model, PromptTooLongError, load
from edgelm.errors import EdgelmError, ModelFileError
from edgelm.runtime.generate import GenerationChunk, GenerationResult, Timings
from edgelm.runtime.sampling import SamplingParams
from edgelm.tokenizer import Tokenizer

__all__ = [
    "EdgelmError",
    "GenerationChunk",
    "GenerationResult",
    "Model",
    "ModelFileError",
    "PromptTooLongError",
    "SamplingParams",
    "Timings",
    "Tokenizer",
    "load",
]
__version__ = "0.1.0"

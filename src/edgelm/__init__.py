"""edgelm: small language models on the device, with the lowest latency."""

from edgelm.errors import EdgelmError, ModelFileError

__all__ = ["EdgelmError", "ModelFileError"]
__version__ = "0.1.0"

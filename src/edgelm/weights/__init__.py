"""Packed tensors that stay in their GGUF quantization."""

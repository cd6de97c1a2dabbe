"""Writing model files: quantization mixes, the file quantizer, synthetic models."""

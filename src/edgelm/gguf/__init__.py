"""The GGUF file format: reading, writing, constants. Knows nothing about models."""

"""The Python API: `load` a model file, then generate, stream, chat or score."""

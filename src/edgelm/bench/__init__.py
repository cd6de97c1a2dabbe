"""Benchmarks that compare edgelm with llama.cpp on the same model files, in the same run."""

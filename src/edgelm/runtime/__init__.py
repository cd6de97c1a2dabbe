"""Runtime: KV caches, sampling, stopping and the generation loop."""

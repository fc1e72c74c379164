"""Benchmarks (``make bench``). Each module has ``run(args) -> list[str]`` returning one
comparison line per measurement: ours vs a baseline measured in the same run."""

"""Ray-free inference: prompt building, batched generation, request batching (unit-tested and benchmarked in-process)."""

"""Ray-free inference: prompt building, batched generation, request batching (unit-tested and benchmarked in-process)."""

# Tokens a completion may generate when its model's registry entry says nothing else (GenerationDefaults).
DEFAULT_MAX_NEW_TOKENS = 48

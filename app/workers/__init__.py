"""Ray-free background loops (the Ray actors in deployments/ run them): telemetry writer, session reaper, context indexer."""

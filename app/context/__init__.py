"""Multi-file context: live file state in Redis, chunking, indexing into pgvector, retrieval for prompts."""

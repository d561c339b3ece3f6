"""Telemetry: events on a Redis stream, written to PostgreSQL by writer actors."""

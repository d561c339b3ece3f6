"""The platform's own log records inside a Serve replica: written by Serve's replica logger, at their level.

Serve configures only its `ray.serve` logger in a replica (a file per replica, behind a memory buffer
that Serve's throughput-optimised mode sizes to 1,000 records and flushes early only for ERROR) and
turns the replica's stderr into INFO records of that logger. The platform's loggers (`app.*`, `db.*`,
`deployments.*`, `serve.*`) have no handler of their own, so without this their warnings went through
Python's last-resort handler to that stderr capture: one INFO record per line of text (a traceback made
dozens), sitting in the buffer for minutes. Here they are handed to the replica logger as the records
they are, and a WARNING or above flushes the buffer so that an operator sees it at once.
"""

from __future__ import annotations

import logging

PROJECT_LOGGERS = ("app", "db", "deployments", "serve")
SERVE_LOGGER = "ray.serve"


class _ToReplicaLog(logging.Handler):
    """Hands a record to Serve's replica logger; flushes its buffer for warnings and errors."""

    def emit(self, record: logging.LogRecord) -> None:
        replica_log = logging.getLogger(SERVE_LOGGER)
        replica_log.handle(record)
        if record.levelno >= logging.WARNING:
            for handler in replica_log.handlers:
                handler.flush()


def route_to_replica_log() -> None:
    """Called in a replica's constructor (idempotent): the platform's loggers write to the replica's log file."""
    if not logging.getLogger(SERVE_LOGGER).handlers:
        return  # not inside a configured Serve replica (a test process, a plain Ray actor)
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToReplicaLog) for h in logger.handlers):
            logger.addHandler(_ToReplicaLog())
        logger.propagate = False

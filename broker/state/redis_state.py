# SPDX-License-Identifier: Apache-2.0
"""Hot state in Redis, shared by every worker of a consumer group.

Key layout (``P`` is the prefix, default ``mmbroker:``):

============================  ======  ==================================================================
key                           type    content
============================  ======  ==================================================================
``P win:z``                   ZSET    broker id, scored by event time (unix s): the time index
``P win:f``                   HASH    broker id -> JSON ``[event_key, classes, ra, dec, extent, rev, issued]``
                                      (what the Lua scripts filter and compare on)
``P win:e``                   HASH    broker id -> the entry (:func:`broker.state.base.encode_entry`)
``P win:p``                   HASH    event key -> broker id of its entry in the window
``P win:wm``                  STRING  watermark, unix s
``P ev:<event_key>:v``        LIST    versions (JSON), in the order first recorded
``P ev:<event_key>:t``        SET     tags
``P ev:<event_key>:c``        SET     coincidence ids
``P co:<coincidence_id>``     STRING  the coincidence, Avro single-object encoded
``P done:<key>``              STRING  idempotency key marked done
``P claim:<key>``             STRING  owner of the claim
============================  ======  ==================================================================

Every write that must not lose a concurrent update (window add/replace/evict,
version append, claim) is one Lua script, so it is atomic on the server;
tag and coincidence-id sets grow by ``SADD``, atomic by nature.  Event state,
done keys, claims and coincidences expire ``ttl_s`` after their last write;
window entries leave by watermark eviction.

Every call rides out a Redis restart: a connection error or timeout is
retried with exponential backoff (50 ms to 1 s) for up to ``retry_s``, then
:class:`~broker.errors.StateError` names the operation.  All operations are
idempotent, so a retry of a call that did reach the server is harmless.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from broker.avro import decode_coincidence, encode_coincidence
from broker.errors import StateError
from broker.model import Coincidence
from broker.state.base import (
    CONE_TOLERANCE_DEG,
    DEFAULT_TTL_S,
    EventState,
    Version,
    WindowEntry,
    decode_entry,
    encode_entry,
    version_from_json,
    version_json,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_LUA_OLDER = """
local function nn(x) if x == cjson.null then return nil end return x end
-- (r1, i1) < (r2, i2), None lowest
local function older(r1, i1, r2, i2)
  if r1 ~= r2 then
    if r1 == nil then return true end
    if r2 == nil then return false end
    return r1 < r2
  end
  if i1 == i2 then return false end
  if i1 == nil then return true end
  if i2 == nil then return false end
  return i1 < i2
end
"""

# KEYS: z, f, e, p, wm.  ARGV: retention_s, then per entry: broker_id, time, header JSON, blob.
_LUA_ADD = _LUA_OLDER + """
local z, f, e, p, wmk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local retention = tonumber(ARGV[1])
local best, best_s = nil, nil
local added = 0
for i = 2, #ARGV, 4 do
  local bid, ts, hdr, blob = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local t = tonumber(ts)
  if best == nil or t > best then best, best_s = t, ts end
  if redis.call('HEXISTS', f, bid) == 0 then
    local h = cjson.decode(hdr)
    local ek = h[1]
    local cur = redis.call('HGET', p, ek)
    local take = true
    if cur then
      local c = cjson.decode(redis.call('HGET', f, cur))
      if older(nn(h[6]), nn(h[7]), nn(c[6]), nn(c[7])) then take = false end
    end
    if take then
      if cur then
        redis.call('ZREM', z, cur)
        redis.call('HDEL', f, cur)
        redis.call('HDEL', e, cur)
      end
      redis.call('ZADD', z, ts, bid)
      redis.call('HSET', f, bid, hdr)
      redis.call('HSET', e, bid, blob)
      redis.call('HSET', p, ek, bid)
      added = added + 1
    end
  end
end
if best == nil then return added end
local wm = tonumber(redis.call('GET', wmk))
if wm == nil or best > wm then
  redis.call('SET', wmk, best_s)
  wm = best
end
local cutoff = string.format('%.17g', wm - retention)
local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. cutoff)
for _, bid in ipairs(old) do
  local h = cjson.decode(redis.call('HGET', f, bid))
  if redis.call('HGET', p, h[1]) == bid then redis.call('HDEL', p, h[1]) end
  redis.call('HDEL', f, bid)
  redis.call('HDEL', e, bid)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. cutoff) end
return added
"""

# The broker ids of the entries a query selects, newline-separated, in (time, broker id) order.  The entries
# themselves are fetched by the client with HMGET: copying megabytes of payload into Lua strings and back
# costs more than the second round trip (bench/bench_window.py).
# KEYS: z, f.  ARGV: t_min, t_max, n_classes (-1: no class filter), classes..., cone flag, ra, dec, radius, tol.
_LUA_QUERY = _LUA_OLDER + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
local n = #ids
if n == 0 then return '' end
local ncls = tonumber(ARGV[3])
local want = nil
if ncls >= 0 then
  want = {}
  for i = 1, ncls do want[ARGV[3 + i]] = true end
end
local c = 4 + math.max(ncls, 0)
local cone = ARGV[c] == '1'
local keep = ids
if want ~= nil or cone then
  local ra0, dec0, radius, tol = 0, 0, 0, 0
  local s0, c0 = 0, 0
  if cone then
    ra0, dec0 = math.rad(tonumber(ARGV[c + 1])), math.rad(tonumber(ARGV[c + 2]))
    radius, tol = tonumber(ARGV[c + 3]), tonumber(ARGV[c + 4])
    s0, c0 = math.sin(dec0), math.cos(dec0)
  end
  keep = {}
  for i = 1, n, 1000 do
    local j = math.min(i + 999, n)
    local hs = redis.call('HMGET', KEYS[2], unpack(ids, i, j))
    for k = 1, j - i + 1 do
      local h = cjson.decode(hs[k])
      local ok = true
      if want ~= nil then
        ok = false
        for _, cl in ipairs(h[2]) do if want[cl] then ok = true break end end
      end
      if ok and cone then
        local ra, dec, ext = nn(h[3]), nn(h[4]), nn(h[5])
        if ra ~= nil and dec ~= nil and ext ~= nil then
          local lat = math.rad(dec)
          local s1, c1 = math.sin(lat), math.cos(lat)
          local dl = ra0 - math.rad(ra)
          local sd, cd = math.sin(dl), math.cos(dl)
          local n1 = c0 * sd
          local n2 = c1 * s0 - s1 * c0 * cd
          local den = s1 * s0 + c1 * c0 * cd
          local sep = math.deg(math.atan2(math.sqrt(n1 * n1 + n2 * n2), den))
          ok = sep <= radius + ext + tol
        end
      end
      if ok then keep[#keep + 1] = ids[i + k - 1] end
    end
  end
end
return table.concat(keep, '\\n')
"""

# KEYS: p, e (get) or z, f, e, p (remove).  ARGV: event key.
_LUA_GET = """
local bid = redis.call('HGET', KEYS[1], ARGV[1])
if not bid then return false end
return redis.call('HGET', KEYS[2], bid)
"""
_LUA_REMOVE = """
local bid = redis.call('HGET', KEYS[4], ARGV[1])
if not bid then return false end
local blob = redis.call('HGET', KEYS[3], bid)
redis.call('ZREM', KEYS[1], bid)
redis.call('HDEL', KEYS[2], bid)
redis.call('HDEL', KEYS[3], bid)
redis.call('HDEL', KEYS[4], ARGV[1])
return blob
"""

# KEYS: per event, its version list, tag set and coincidence set.  ARGV: ttl_ms, then per version:
# event index (1-based), JSON prefix identifying the broker id, version JSON.
_LUA_RECORD = """
local ttl = ARGV[1]
for i = 2, #ARGV, 3 do
  local vk = KEYS[3 * tonumber(ARGV[i]) - 2]
  local pref, js = ARGV[i + 1], ARGV[i + 2]
  local found = false
  for _, el in ipairs(redis.call('LRANGE', vk, 0, -1)) do
    if string.sub(el, 1, #pref) == pref then found = true break end
  end
  if not found then redis.call('RPUSH', vk, js) end
end
local out = {}
for ev = 1, #KEYS / 3 do
  local vk, tk, ck = KEYS[3 * ev - 2], KEYS[3 * ev - 1], KEYS[3 * ev]
  redis.call('PEXPIRE', vk, ttl)
  redis.call('PEXPIRE', tk, ttl)
  redis.call('PEXPIRE', ck, ttl)
  out[ev] = {redis.call('LRANGE', vk, 0, -1), redis.call('SMEMBERS', tk), redis.call('SMEMBERS', ck)}
end
return out
"""

# KEYS: claim key.  ARGV: owner, ttl_ms.
_LUA_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: coincidence-id set of the event.  ARGV: prefix of coincidence keys.
_LUA_COINCIDENCES = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local b = redis.call('GET', ARGV[1] .. id)
  if b then out[#out + 1] = b end
end
return out
"""


def _num(x: float) -> str:
    """A float as the shortest string that parses back to it (Redis and Lua read it exactly)."""
    return repr(float(x))


class _Redis:
    """A client plus the retry policy shared by the window and the store."""

    def __init__(self, url: str, retry_s: float, socket_timeout_s: float) -> None:
        self.retry_s = float(retry_s)
        # Client-side retries off: the retry loop below owns the policy (and the time budget).
        self.client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=min(socket_timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0),
        )

    def script(self, source: str) -> Script:
        return self.client.register_script(source)

    def run(self, op: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; on a connection error or timeout retry with backoff for up to ``retry_s``.

        Raises
        ------
        StateError
            Redis stayed unreachable for ``retry_s``, or answered with an error.
        """
        start = time.monotonic()
        delay = 0.05
        failures = 0
        while True:
            try:
                result = fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                waited = time.monotonic() - start
                if waited >= self.retry_s:
                    raise StateError(
                        f"Redis state: {op} failed, Redis unreachable for {waited:.1f} s "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                if failures == 1:
                    log.warning("Redis state: %s: %s: %s; retrying for up to %.0f s", op, type(exc).__name__,
                                exc, self.retry_s)
                time.sleep(min(delay, max(0.0, self.retry_s - waited)))
                delay = min(2 * delay, 1.0)
                continue
            except redis.RedisError as exc:
                raise StateError(f"Redis state: {op} failed ({type(exc).__name__}: {exc})") from exc
            if failures:
                log.info("Redis state: %s succeeded after %d failed attempts", op, failures)
            return result


def _entry_header(e: WindowEntry) -> str:
    return json.dumps([e.event_key, list(e.classes), e.ra, e.dec, e.extent, e.revision, e.issued],
                      separators=(",", ":"))


class RedisWindow:
    """The recent-alert window in Redis (see :class:`broker.state.base.RecentWindow`).

    Parameters
    ----------
    conn
        Client and retry policy.
    prefix
        Key prefix.
    retention_s
        Entries with event time < watermark - ``retention_s`` are evicted (s).
    """

    def __init__(self, conn: _Redis, prefix: str, retention_s: float) -> None:
        self.retention_s = float(retention_s)
        self._r = conn
        self._z, self._f, self._e, self._p, self._wm = (
            f"{prefix}win:{k}" for k in ("z", "f", "e", "p", "wm")
        )
        self._add = conn.script(_LUA_ADD)
        self._query = conn.script(_LUA_QUERY)
        self._get = conn.script(_LUA_GET)
        self._remove = conn.script(_LUA_REMOVE)

    def add(self, entries: Sequence[WindowEntry]) -> None:
        """Insert or replace entries per event key; update the watermark; evict expired entries (one script)."""
        if not entries:
            return
        args: list[str | bytes] = [_num(self.retention_s)]
        for e in entries:
            args += [e.broker_id, _num(e.time), _entry_header(e), encode_entry(e)]
        keys = [self._z, self._f, self._e, self._p, self._wm]
        self._r.run("window.add", lambda: self._add(keys=keys, args=args))

    def query(
        self,
        t_min: float,
        t_max: float,
        classes: Collection[str] | None = None,
        cone: tuple[float, float, float] | None = None,
    ) -> list[WindowEntry]:
        """Entries in ``[t_min, t_max]`` (unix s) with any of ``classes``, possibly overlapping ``cone`` (deg).

        Two round trips: a script selects the broker ids (time range from the ZSET, class and cone filters on
        the compact headers), then HMGET fetches those entries.  Not a snapshot: an entry that another worker
        replaces or evicts in between is left out.
        """
        if t_min > t_max:
            return []
        args: list[str] = [_num(t_min), _num(t_max)]
        if classes is None:
            args.append("-1")
        else:
            cls = sorted(set(classes))
            if not cls:
                return []
            args += [str(len(cls)), *cls]
        if cone is None:
            args.append("0")
        else:
            args += ["1", _num(cone[0]), _num(cone[1]), _num(cone[2]), _num(CONE_TOLERANCE_DEG)]
        keys = [self._z, self._f]
        ids: bytes = self._r.run("window.query", lambda: self._query(keys=keys, args=args))
        if not ids:
            return []
        blobs = self._r.run("window.query", lambda: self._r.client.hmget(self._e, ids.split(b"\n")))
        # an entry replaced or evicted by another worker between the two calls is left out
        return [decode_entry(b) for b in blobs if isinstance(b, bytes)]

    def remove_event(self, event_key: str) -> WindowEntry | None:
        """Remove the event's entry and return it (None if absent)."""
        keys = [self._z, self._f, self._e, self._p]
        blob = self._r.run("window.remove_event", lambda: self._remove(keys=keys, args=[event_key]))
        return None if blob is None else decode_entry(blob)

    def get_event(self, event_key: str) -> WindowEntry | None:
        """The event's entry, if in the window."""
        blob = self._r.run("window.get_event", lambda: self._get(keys=[self._p, self._e], args=[event_key]))
        return None if blob is None else decode_entry(blob)

    def watermark(self) -> float | None:
        """Maximum event time added by any worker (unix s), None before the first add."""
        raw = self._r.run("window.watermark", lambda: self._r.client.get(self._wm))
        return None if raw is None else float(raw)

    def __len__(self) -> int:
        return int(self._r.run("window.len", lambda: self._r.client.zcard(self._z)))


class RedisState:
    """:class:`~broker.state.base.StateStore` in Redis, shared by every worker.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (never logged).
    retention_s
        Retention of the recent-alert window, s of event time behind the watermark.
    prefix
        Prefix of every key (namespaces the broker in a shared Redis).
    ttl_s
        Lifetime of event states, done keys, claims and coincidences after their last write (s).
    retry_s
        How long a call keeps retrying while Redis is unreachable before raising
        :class:`~broker.errors.StateError` (s).
    socket_timeout_s
        Read timeout of one Redis command (s); connecting times out after at most 1 s.
    """

    def __init__(
        self,
        url: str,
        retention_s: float,
        *,
        prefix: str = "mmbroker:",
        ttl_s: float = DEFAULT_TTL_S,
        retry_s: float = 30.0,
        socket_timeout_s: float = 5.0,
    ) -> None:
        self.prefix = prefix
        self.ttl_s = float(ttl_s)
        self._ttl_ms = max(1, round(self.ttl_s * 1000))
        self._r = _Redis(url, retry_s, socket_timeout_s)
        self._window = RedisWindow(self._r, prefix, retention_s)
        self._record = self._r.script(_LUA_RECORD)
        self._claim = self._r.script(_LUA_CLAIM)
        self._coinc = self._r.script(_LUA_COINCIDENCES)

    @property
    def window(self) -> RedisWindow:
        """The recent-alert window."""
        return self._window

    @property
    def retry_s(self) -> float:
        """Retry budget of one call while Redis is unreachable (s)."""
        return self._r.retry_s

    def _ev(self, key: str, part: str) -> str:
        return f"{self.prefix}ev:{key}:{part}"

    def _state(self, key: str, raw: Sequence[Any]) -> EventState:
        versions, tags, coinc = raw
        return EventState(
            key,
            tuple(version_from_json(v) for v in versions),
            frozenset(t.decode() for t in tags),
            frozenset(c.decode() for c in coinc),
        )

    def record_versions(self, versions: Sequence[tuple[str, Version]]) -> dict[str, EventState]:
        """Append versions not yet recorded (one atomic script); the touched events' states after it."""
        if not versions:
            return {}
        order: dict[str, int] = {}
        args: list[str] = [str(self._ttl_ms)]
        for key, v in versions:
            idx = order.setdefault(key, len(order) + 1)
            args += [str(idx), "[" + json.dumps(v.broker_id) + ",", version_json(v)]
        keys = [self._ev(k, p) for k in order for p in ("v", "t", "c")]
        out = self._r.run("record_versions", lambda: self._record(keys=keys, args=args))
        return {k: self._state(k, raw) for k, raw in zip(order, out, strict=True)}

    def events(self, event_keys: Collection[str]) -> dict[str, EventState]:
        """States of the known events among ``event_keys`` (one MULTI/EXEC: a consistent snapshot)."""
        keys = list(dict.fromkeys(event_keys))
        if not keys:
            return {}

        def read() -> list[Any]:
            pipe = self._r.client.pipeline(transaction=True)
            for k in keys:
                pipe.lrange(self._ev(k, "v"), 0, -1)
                pipe.smembers(self._ev(k, "t"))
                pipe.smembers(self._ev(k, "c"))
            return list(pipe.execute())

        raw = self._r.run("events", read)
        out = {}
        for i, k in enumerate(keys):
            part = raw[3 * i: 3 * i + 3]
            if any(part):
                out[k] = self._state(k, part)
        return out

    def add_tags(self, tags: Mapping[str, Collection[str]]) -> None:
        """Union tags into each event's tag set (SADD) and refresh the event's TTL."""
        items = [(k, list(ts)) for k, ts in tags.items() if ts]
        if not items:
            return

        def write() -> None:
            pipe = self._r.client.pipeline(transaction=True)
            for k, ts in items:
                pipe.sadd(self._ev(k, "t"), *ts)
                for part in ("v", "t", "c"):
                    pipe.pexpire(self._ev(k, part), self._ttl_ms)
            pipe.execute()

        self._r.run("add_tags", write)

    def seen(self, keys: Collection[str]) -> set[str]:
        """The keys already marked done (one MGET)."""
        ks = list(keys)
        if not ks:
            return set()
        vals = self._r.run("seen", lambda: self._r.client.mget([f"{self.prefix}done:{k}" for k in ks]))
        return {k for k, v in zip(ks, vals, strict=True) if v is not None}

    def mark_done(self, keys: Collection[str]) -> None:
        """Mark keys done for ``ttl_s``."""
        ks = list(keys)
        if not ks:
            return

        def write() -> None:
            pipe = self._r.client.pipeline(transaction=False)
            for k in ks:
                pipe.set(f"{self.prefix}done:{k}", b"1", px=self._ttl_ms)
            pipe.execute()

        self._r.run("mark_done", write)

    def claim(self, key: str, owner: str) -> bool:
        """First claim wins (atomic); the holder re-claiming gets True and a fresh TTL."""
        got = self._r.run(
            "claim", lambda: self._claim(keys=[f"{self.prefix}claim:{key}"], args=[owner, str(self._ttl_ms)])
        )
        return bool(got)

    def put_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Store coincidences (Avro, replacing by id) and add their ids to both events' sets (MULTI/EXEC)."""
        if not coincidences:
            return
        blobs = [(c, encode_coincidence(c)) for c in coincidences]

        def write() -> None:
            pipe = self._r.client.pipeline(transaction=True)
            for c, blob in blobs:
                pipe.set(f"{self.prefix}co:{c.coincidence_id}", blob, px=self._ttl_ms)
                for k in (c.a_event_key, c.b_event_key):
                    pipe.sadd(self._ev(k, "c"), c.coincidence_id)
                    for part in ("v", "t", "c"):
                        pipe.pexpire(self._ev(k, part), self._ttl_ms)
            pipe.execute()

        self._r.run("put_coincidences", write)

    def coincidences_of(self, event_key: str) -> list[Coincidence]:
        """Stored coincidences of the event, by coincidence id."""
        blobs = self._r.run(
            "coincidences_of",
            lambda: self._coinc(keys=[self._ev(event_key, "c")], args=[f"{self.prefix}co:"]),
        )
        return sorted((decode_coincidence(b) for b in blobs), key=lambda c: c.coincidence_id)

    def close(self) -> None:
        """Close the connection pool."""
        self._r.client.close()

    def __enter__(self) -> RedisState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

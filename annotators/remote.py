# SPDX-License-Identifier: Apache-2.0
"""Remote annotators that never stall the stream.

Building blocks for annotators that ask a remote service (CDS SIMBAD, CDS
XMatch, ...) about the positions of a micro-batch:

* :class:`Deadline` and a small thread pool owned by each annotator: the
  blocking remote call runs in a worker thread and the batch waits for it at
  most ``deadline_s`` seconds, then proceeds.  A call that is still running at
  the deadline is *abandoned*, not cancelled (a blocking HTTP request cannot
  be): when its result arrives later it still fills the cache, so the next
  alert at the same position is annotated from the cache.  Each call is also
  bounded by its own HTTP timeout, so an abandoned worker is freed eventually.
* :class:`CircuitBreaker`: after ``failure_threshold`` consecutive failed or
  timed-out batches the service is not called any more for ``reset_after_s``
  seconds; then a single trial call decides whether to close the circuit again.
* :class:`Cache` (protocol), :class:`MemoryCache` (bounded LRU with TTL, the
  default) and :class:`RedisCache` (shared between workers; an outage of Redis
  is logged, counted and behaves as a miss).  Cache keys are derived from the
  service, the table, the match radius and the position rounded to
  ``position_decimals`` (deg), so the same sky position is never asked twice.
* :class:`RemoteAnnotator`: the :class:`~broker.annotate.Annotator` protocol on
  top of all that.  Subclasses only implement one blocking batched request.

An annotation whose remote part could not be done has ``status="missing"`` and
a ``reason`` such as ``"timeout after 2.0 s"``, ``"HTTP 500 from <url>"`` or
``"circuit open since ... after 3 consecutive failures: <last error>"``; the
annotator never raises because a service failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from broker.annotate import Need
from broker.errors import BrokerError
from broker.model import Alert, Annotation, CatalogMatch, Circle, Ellipse, Point, PropertyValue, Region

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

Clock: TypeAlias = Callable[[], float]
"""A monotonic clock returning seconds (``time.monotonic`` unless injected in tests)."""

CircuitState = Literal["closed", "open", "half_open"]
Position: TypeAlias = tuple[float, float]
"""(RA, Dec) in deg, ICRS."""

MatchRecord: TypeAlias = dict[str, Any]
"""One source found around one position, JSON-serialisable (what the caches hold).

Keys: ``source_id`` (str), ``ra``, ``dec`` (deg), ``separation_arcsec`` (arcsec),
``properties`` (mapping of str to bool/int/float/str).
"""


class RemoteServiceError(BrokerError):
    """A remote service answered something the annotator cannot use (the message says what)."""


# --------------------------------------------------------------------------- deadline


class Deadline:
    """A point in time by which a batch must proceed.

    Parameters
    ----------
    seconds
        Time allowed from now (s).
    clock
        Monotonic clock (s); real time by default, since waiting on threads
        always happens in real time.
    """

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.remaining() <= 0.0


# --------------------------------------------------------------------------- circuit breaker


class CircuitBreaker:
    """Stops calling a failing service for a while.

    ``closed`` (calls allowed) -> ``open`` after ``failure_threshold``
    consecutive failures (timeouts count as failures); while open no call is
    made; after ``reset_after_s`` it is ``half_open``: exactly one trial call
    is allowed, whose success closes the circuit and whose failure opens it
    again for another ``reset_after_s``.  Thread-safe.

    Parameters
    ----------
    failure_threshold
        Consecutive failures that open the circuit (>= 1).
    reset_after_s
        Time the circuit stays open before a trial call (s).
    clock
        Monotonic clock (s); inject a fake one in tests.
    """

    def __init__(self, failure_threshold: int = 3, reset_after_s: float = 60.0, clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_after_s <= 0:
            raise ValueError(f"reset_after_s must be > 0 s, got {reset_after_s}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: CircuitState = "closed"
        self._failures = 0
        self._last_error = ""
        self._opened_at = 0.0
        self._opened_utc: datetime | None = None
        self._trial_in_flight = False
        self.times_opened = 0

    @property
    def state(self) -> CircuitState:
        """``closed``, ``open`` or ``half_open`` (open and past ``reset_after_s``)."""
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_after_s:
                return "half_open"
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        with self._lock:
            return self._failures

    def allow(self) -> bool:
        """Whether a call may be made now; in half-open state, grants the single trial call."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_after_s:
                self._state = "half_open"
            if self._state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: close the circuit."""
        with self._lock:
            self._state = "closed"
            self._failures = 0
            self._trial_in_flight = False
            self._opened_utc = None

    def record_failure(self, reason: str) -> None:
        """A call failed or timed out (``reason`` is kept for :meth:`open_reason`)."""
        with self._lock:
            self._failures += 1
            self._last_error = reason
            trial_failed = self._state == "half_open"
            self._trial_in_flight = False
            if trial_failed or (self._state == "closed" and self._failures >= self.failure_threshold):
                self._state = "open"
                self._opened_at = self._clock()
                self._opened_utc = datetime.now(UTC)
                self.times_opened += 1
                log.warning("circuit opened after %d consecutive failures: %s", self._failures, reason)

    def open_reason(self) -> str:
        """Why calls are refused: ``circuit open since <UTC> after N consecutive failures: <last error>``."""
        with self._lock:
            since = "?" if self._opened_utc is None else self._opened_utc.isoformat(timespec="seconds")
            since = since.replace("+00:00", "Z")
            wait_s = max(0.0, self.reset_after_s - (self._clock() - self._opened_at))
            trial = "; trial call in flight" if self._trial_in_flight else f"; next trial in {wait_s:.1f} s"
            return f"circuit open since {since} after {self._failures} consecutive failures: {self._last_error}{trial}"

    def as_dict(self) -> dict[str, str | int]:
        """State and counters, for metrics."""
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "times_opened": self.times_opened,
        }


# --------------------------------------------------------------------------- caches


@runtime_checkable
class Cache(Protocol):
    """A key-value cache of JSON-serialisable values with a time to live.

    Implementations must not raise on a backend outage: they log it, count it
    and behave as a miss (``get_many``) or a no-op (``set_many``).
    """

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The values of the ``keys`` present (missing or expired keys are left out)."""
        ...

    def set_many(self, mapping: Mapping[str, Any], ttl_s: float) -> None:
        """Store every item of ``mapping`` for ``ttl_s`` seconds."""
        ...


class MemoryCache:
    """In-process bounded LRU cache with a per-entry time to live.  Thread-safe.

    Parameters
    ----------
    max_entries
        Least recently used entries are evicted beyond this size.
    clock
        Monotonic clock (s) used for expiry.
    """

    def __init__(self, max_entries: int = 100_000, clock: Clock = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The values of the ``keys`` present and not expired."""
        now = self._clock()
        out: dict[str, Any] = {}
        with self._lock:
            for k in keys:
                entry = self._data.get(k)
                if entry is None:
                    self.misses += 1
                    continue
                expires, value = entry
                if expires <= now:
                    del self._data[k]
                    self.misses += 1
                    continue
                self._data.move_to_end(k)
                out[k] = value
                self.hits += 1
        return out

    def set_many(self, mapping: Mapping[str, Any], ttl_s: float) -> None:
        """Store the items for ``ttl_s`` seconds, evicting the least recently used beyond ``max_entries``."""
        expires = self._clock() + ttl_s
        with self._lock:
            for k, v in mapping.items():
                self._data[k] = (expires, v)
                self._data.move_to_end(k)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()


class RedisCache:
    """A cache in Redis, shared by every worker of the broker.

    Values are stored JSON-serialised under ``prefix + key`` with a TTL.  Any
    Redis error (server down, timeout, corrupt value) is logged, counted in
    :attr:`errors` and treated as a miss; after an error Redis is not tried
    again for ``retry_after_s`` seconds, so an outage costs at most one short
    socket timeout per ``retry_after_s``.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (never logged: it may hold a password).
    prefix
        Prefix of every key written (namespaces this cache in a shared Redis).
    socket_timeout_s
        Connect and read timeout of each Redis command (s).
    retry_after_s
        Time Redis is left alone after an error (s).
    client
        An existing ``redis.Redis`` client to use instead of connecting to ``url``.
    clock
        Monotonic clock (s) for the retry pause.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "mmbroker:remote:",
        *,
        socket_timeout_s: float = 0.25,
        retry_after_s: float = 5.0,
        client: redis.Redis | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        import redis as redis_lib
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.prefix = prefix
        self._redis_error: type[Exception] = redis_lib.RedisError
        # No client-side retries: a miss is cheaper than a stalled batch.
        self._client = client or redis_lib.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._breaker = CircuitBreaker(failure_threshold=1, reset_after_s=retry_after_s, clock=clock)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.skipped = 0

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self, name, getattr(self, name) + n)

    def _failed(self, what: str, exc: Exception) -> None:
        self._count(errors=1)
        self._breaker.record_failure(f"{type(exc).__name__}: {exc}")
        log.warning(
            "Redis cache %s failed (%s: %s); treated as a miss for %.0f s",
            what,
            type(exc).__name__,
            exc,
            self._breaker.reset_after_s,
        )

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The values present in Redis; ``{}`` when Redis is unavailable."""
        if not keys:
            return {}
        if not self._breaker.allow():
            self._count(skipped=1, misses=len(keys))
            return {}
        try:
            raw = self._client.mget([self.prefix + k for k in keys])
        except self._redis_error as exc:
            self._failed("read", exc)
            self._count(misses=len(keys))
            return {}
        self._breaker.record_success()
        out: dict[str, Any] = {}
        for k, v in zip(keys, raw, strict=True):
            if v is None:
                continue
            try:
                out[k] = json.loads(v)
            except ValueError:
                log.warning("Redis cache: value of %s is not JSON; ignored", self.prefix + k)
                self._count(errors=1)
        self._count(hits=len(out), misses=len(keys) - len(out))
        return out

    def set_many(self, mapping: Mapping[str, Any], ttl_s: float) -> None:
        """Store the items with a TTL (ms resolution); a no-op when Redis is unavailable."""
        if not mapping:
            return
        if not self._breaker.allow():
            self._count(skipped=1)
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            pipe = self._client.pipeline(transaction=False)
            for k, v in mapping.items():
                pipe.set(self.prefix + k, json.dumps(v, separators=(",", ":")), px=ttl_ms)
            pipe.execute()
        except self._redis_error as exc:
            self._failed("write", exc)
            return
        self._breaker.record_success()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


# --------------------------------------------------------------------------- the annotator base class


@dataclass
class RemoteCounters:
    """Counters of a remote annotator (cumulative since start), for metrics.

    ``requests`` counts remote calls made (one per table per batch with cache
    misses); ``cache_hits``/``cache_misses`` count positions; ``timeouts`` and
    ``failures`` count calls; ``late_results`` counts calls that finished after
    their batch's deadline (their results went to the cache);
    ``circuit_rejections`` and ``busy_rejections`` count batches not sent
    because the circuit was open or every worker was still busy.
    """

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_errors: int = 0
    timeouts: int = 0
    failures: int = 0
    late_results: int = 0
    circuit_rejections: int = 0
    busy_rejections: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain mapping."""
        return asdict(self)


@dataclass
class _Call:
    """One remote call of one batch, shared between the batch and the worker thread."""

    table: str
    positions: list[Position]
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: Literal["waiting", "abandoned", "done"] = "waiting"


@dataclass(frozen=True)
class _Outcome:
    """What a batch got from one table: records per position, or why not."""

    records: list[list[MatchRecord]] | None
    error: str | None = None
    timed_out: bool = False


def error_size(region: Region) -> float | None:
    """Largest error radius of a region (deg); 0 for a point, None if unknown."""
    if isinstance(region, Point):
        return 0.0
    if isinstance(region, Circle):
        return region.radius
    if isinstance(region, Ellipse):
        return region.semi_major
    return None


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed remote call, e.g. ``HTTP 500 from <url>``.

    The exception chain (``__cause__`` and ``__context__``) is searched for an
    HTTP error carrying a response, since clients such as astroquery re-raise
    their own error while handling the HTTP one.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return f"HTTP {status} from {getattr(response, 'url', '?')}"
        cur = cur.__cause__ or cur.__context__
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def _round_position(ra: float, dec: float, decimals: int) -> Position:
    r = round(ra % 360.0, decimals)
    if r >= 360.0:
        r = 0.0
    return r + 0.0, round(dec, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


class RemoteAnnotator(ABC):
    """Base of annotators that ask a remote service about alert positions.

    ``annotate(alerts)`` takes each alert's best position (alerts without one
    get ``status="skipped"``), rounds it to ``position_decimals`` (deg) and
    de-duplicates, serves what it can from the cache, sends ONE request per
    table for the remaining positions of the batch (:meth:`fetch`), waits for
    it at most ``deadline_s`` and maps the results back to the alerts.
    Separations are measured from the rounded position (the rounding error is
    below 0.5 x 10^-decimals deg, 0.018 arcsec with the default 5).

    Only successful results are cached (an empty list for a position with no
    source is a result too); failures are never cached.  The circuit breaker
    sees one outcome per batch that made remote calls: a failure if any of
    its calls failed or timed out, else a success.  Positions served from the
    cache are annotated even while the circuit is open.

    Parameters
    ----------
    deadline_s
        Longest time a batch waits for the service (s).
    cache
        Where results are kept; a private :class:`MemoryCache` by default.
    cache_ttl_s
        Time a result stays in the cache (s).
    breaker
        Circuit breaker of this service; a default :class:`CircuitBreaker`
        (3 failures, 60 s) when omitted.
    max_workers
        Threads of the annotator's pool; when all are still busy with
        abandoned calls, a batch is not sent (``busy_rejections``) and its
        alerts are annotated as missing.
    position_decimals
        Decimals of deg kept in positions sent and in cache keys.
    max_matches
        Matches kept per alert and table, nearest first (``n_matches`` in the
        annotation's properties counts them all).
    max_error_deg
        Alerts localized worse than this (error radius or ellipse semi-major
        axis, deg; sky-map-only alerts always) are not applicable: a few
        arcsec around the centre of a degree-wide region says nothing.
        ``None``: every alert with a position.

    Subclasses set :attr:`name`, :attr:`version`, :attr:`adds`,
    :attr:`service`, and implement :meth:`tables`, :meth:`fetch`,
    :meth:`to_match` and optionally :meth:`summarize`.
    """

    name: str
    version: str
    needs: Need = "position"
    adds: str
    service: str
    """Name of the remote service, first part of every cache key."""

    def __init__(
        self,
        *,
        deadline_s: float = 2.0,
        cache: Cache | None = None,
        cache_ttl_s: float = 7 * 86400.0,
        breaker: CircuitBreaker | None = None,
        max_workers: int = 2,
        position_decimals: int = 5,
        max_matches: int = 50,
        max_error_deg: float | None = None,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0 s, got {deadline_s}")
        self.deadline_s = deadline_s
        self.cache: Cache = cache if cache is not None else MemoryCache()
        self.cache_ttl_s = cache_ttl_s
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.max_workers = max_workers
        self.position_decimals = position_decimals
        self.max_matches = max_matches
        self.max_error_deg = max_error_deg
        self.counters = RemoteCounters()
        self._counter_lock = threading.Lock()
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{type(self).__name__}-remote")

    # ---- what subclasses provide

    @abstractmethod
    def tables(self) -> tuple[str, ...]:
        """The tables (catalogs) asked, one remote request per table per batch."""

    @abstractmethod
    def fetch(self, table: str, positions: Sequence[Position]) -> list[list[MatchRecord]]:
        """Blocking: ONE remote request for ``positions`` (deg); records per position, in order.

        Raises on any failure (HTTP error, unusable response); runs in a worker thread.
        """

    @abstractmethod
    def to_match(self, table: str, record: MatchRecord) -> CatalogMatch:
        """Turn a (possibly cached) record into a :class:`CatalogMatch`."""

    def summarize(self, matches: Sequence[CatalogMatch], total: int) -> dict[str, PropertyValue]:
        """Annotation properties from an alert's kept ``matches`` (nearest first) and their ``total`` number."""
        return {"n_matches": total}

    def key_part(self, table: str) -> str:
        """What, besides service, table and position, a cache key must depend on (e.g. the radius)."""
        return f"v{self.version}"

    # ---- metrics and life cycle

    def metrics(self) -> dict[str, int | str]:
        """Counters, circuit state and consecutive failures, for metrics."""
        out: dict[str, int | str] = dict(self.counters.as_dict())
        out["circuit_state"] = self.breaker.state
        out["consecutive_failures"] = self.breaker.consecutive_failures
        out["in_flight"] = self._in_flight
        return out

    def close(self) -> None:
        """Stop the worker pool without waiting for abandoned calls."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, n in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + n)

    # ---- the protocol

    def cache_key(self, table: str, position: Position) -> str:
        """Cache key of ``table`` at a rounded ``position`` (deg)."""
        d = self.position_decimals
        return f"{self.service}:{table}:{self.key_part(table)}:{position[0]:.{d}f}:{position[1]:+.{d}f}"

    def annotate(self, alerts: Sequence[Alert]) -> list[Annotation | None]:
        """Annotate a batch; one annotation per alert, in order.  Never raises on service failure."""
        positions: list[Position | None] = []
        unique: dict[Position, None] = {}
        applicable = [self._applicable(a) for a in alerts]
        for alert, ok in zip(alerts, applicable, strict=True):
            pos = alert.position if ok else None
            if pos is None:
                positions.append(None)
                continue
            rounded = _round_position(pos[0], pos[1], self.position_decimals)
            positions.append(rounded)
            unique[rounded] = None
        wanted = list(unique)

        records: dict[str, dict[Position, list[MatchRecord]]] = {}
        errors: dict[str, str] = {}
        if wanted:
            misses: dict[str, list[Position]] = {}
            for table in self.tables():
                records[table] = self._from_cache(table, wanted)
                todo = [p for p in wanted if p not in records[table]]
                if todo:
                    misses[table] = todo
            if misses:
                for table, outcome in self._call_remote(misses).items():
                    if outcome.records is None:
                        errors[table] = outcome.error or "unknown error"
                    else:
                        records[table].update(zip(misses[table], outcome.records, strict=True))
        return [
            self._annotation(pos, records, errors) if ok else None
            for pos, ok in zip(positions, applicable, strict=True)
        ]

    def _applicable(self, alert: Alert) -> bool:
        if self.max_error_deg is None:
            return True
        size = error_size(alert.region) if alert.region is not None else None
        return size is not None and size <= self.max_error_deg

    def _from_cache(self, table: str, wanted: list[Position]) -> dict[Position, list[MatchRecord]]:
        keys = {self.cache_key(table, p): p for p in wanted}
        try:
            found = self.cache.get_many(list(keys))
        except Exception as exc:  # a contributed Cache must not break annotation
            log.warning("%s: cache read failed (%s); treated as a miss", self.name, describe_error(exc))
            self._count(cache_errors=1)
            found = {}
        self._count(cache_hits=len(found), cache_misses=len(keys) - len(found))
        return {keys[k]: v for k, v in found.items()}

    def _store(self, table: str, positions: Sequence[Position], results: Sequence[list[MatchRecord]]) -> None:
        mapping = {self.cache_key(table, p): r for p, r in zip(positions, results, strict=True)}
        try:
            self.cache.set_many(mapping, self.cache_ttl_s)
        except Exception as exc:  # a contributed Cache must not break annotation
            log.warning("%s: cache write failed (%s)", self.name, describe_error(exc))
            self._count(cache_errors=1)

    def _work(self, call: _Call) -> list[list[MatchRecord]]:
        """Runs in a worker thread: fetch, cache the result (even when late), account."""
        try:
            result = self.fetch(call.table, call.positions)
            if len(result) != len(call.positions):
                raise RemoteServiceError(f"{len(result)} results for {len(call.positions)} positions")
            self._store(call.table, call.positions, result)
            return result
        finally:
            with call.lock:
                late = call.state == "abandoned"
                call.state = "done"
            with self._counter_lock:
                self._in_flight -= 1
                if late:
                    self.counters.late_results += 1

    def _call_remote(self, misses: dict[str, list[Position]]) -> dict[str, _Outcome]:
        with self._counter_lock:
            in_flight = self._in_flight
            busy = in_flight + len(misses) > self.max_workers
            if busy:
                self.counters.busy_rejections += 1
        if busy:
            reason = f"all {self.max_workers} workers busy with {in_flight} earlier calls still running"
            return {t: _Outcome(None, reason) for t in misses}
        if not self.breaker.allow():
            self._count(circuit_rejections=1)
            reason = self.breaker.open_reason()
            return {t: _Outcome(None, reason) for t in misses}

        deadline = Deadline(self.deadline_s)
        calls: dict[str, tuple[_Call, Future[list[list[MatchRecord]]]]] = {}
        for table, todo in misses.items():
            call = _Call(table, todo)
            with self._counter_lock:
                self._in_flight += 1
                self.counters.requests += 1
            calls[table] = (call, self._pool.submit(self._work, call))
        wait([f for _, f in calls.values()], timeout=deadline.remaining())

        outcomes: dict[str, _Outcome] = {}
        for table, (call, fut) in calls.items():
            with call.lock:
                if call.state == "waiting":
                    call.state = "abandoned"
            if call.state == "abandoned":
                self._count(timeouts=1)
                outcomes[table] = _Outcome(None, f"timeout after {self.deadline_s} s", timed_out=True)
                continue
            exc = fut.exception()
            if exc is not None:
                self._count(failures=1)
                outcomes[table] = _Outcome(None, describe_error(exc))
                log.warning("%s: %s request failed: %s", self.name, table, outcomes[table].error)
                log.debug("%s: %s request failed", self.name, table, exc_info=exc)
            else:
                outcomes[table] = _Outcome(fut.result())

        failed = [o.error for o in outcomes.values() if o.records is None]
        if failed:
            self.breaker.record_failure(failed[0] or "unknown error")
        else:
            self.breaker.record_success()
        return outcomes

    def _annotation(
        self, pos: Position | None, records: dict[str, dict[Position, list[MatchRecord]]], errors: dict[str, str]
    ) -> Annotation:
        if pos is None:
            return Annotation(self.name, self.version, status="skipped", reason="alert has no position")
        matches: list[CatalogMatch] = []
        reasons: list[str] = []
        total = 0
        for table in self.tables():
            found = records.get(table, {}).get(pos)
            if found is None:
                err = errors.get(table, "no result")
                reasons.append(err if len(self.tables()) == 1 else f"{table}: {err}")
                continue
            total += len(found)
            nearest = sorted(found, key=lambda r: float(r["separation_arcsec"]))[: self.max_matches]
            matches.extend(self.to_match(table, r) for r in nearest)
        matches.sort(key=lambda m: m.separation)
        if reasons:
            # tables that did answer still contribute their matches
            return Annotation(
                self.name, self.version, status="missing", reason="; ".join(reasons), matches=tuple(matches)
            )
        return Annotation(
            self.name, self.version, status="ok", matches=tuple(matches), properties=self.summarize(matches, total)
        )


def spec_fingerprint(*parts: object) -> str:
    """A short stable digest of ``parts`` (for cache keys that depend on a configuration)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]

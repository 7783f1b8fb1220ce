# SPDX-License-Identifier: Apache-2.0
"""The shared hot state of the workers, behind one contract with two backends.

* ``memory`` (:class:`MemoryState`): in process, for one worker (the embedded default);
* ``redis`` (:class:`RedisState`): shared by every worker of a consumer group.

What it holds: the recent-alert window (one entry per event, its latest
revision, indexed by event time, for coincidence searches), the revision
registry of each event (versions, tags, coincidence ids), idempotency keys
of work already done, claims (first claim wins) and coincidences.

Example
-------
>>> from broker.state import Version, open_state
>>> state = open_state("memory", None, retention_s=86400.0)
>>> st = state.record_versions([("IceCube/137849_12345678", Version("mmb-1", 0, None, False))])
>>> [v.broker_id for v in st["IceCube/137849_12345678"].versions]
['mmb-1']
>>> state.claim("coinc:x", "worker-1"), state.claim("coinc:x", "worker-2")
(True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.errors import ConfigError
from broker.sky import angular_separation
from broker.state.base import (
    CONE_TOLERANCE_DEG,
    DEFAULT_TTL_S,
    STATE_BACKENDS,
    EventState,
    RecentWindow,
    StateBackend,
    StateStore,
    Version,
    WindowEntry,
)
from broker.state.memory import MemoryState, MemoryWindow
from broker.state.redis_state import RedisState, RedisWindow

if TYPE_CHECKING:
    from broker.config import Settings

__all__ = [
    "CONE_TOLERANCE_DEG",
    "DEFAULT_TTL_S",
    "STATE_BACKENDS",
    "EventState",
    "MemoryState",
    "MemoryWindow",
    "RecentWindow",
    "RedisState",
    "RedisWindow",
    "StateBackend",
    "StateStore",
    "Version",
    "WindowEntry",
    "angular_separation",
    "open_state",
    "state_from_settings",
]


def open_state(
    backend: str,
    redis_url: str | None,
    retention_s: float,
    *,
    prefix: str = "mmbroker:",
    ttl_s: float = DEFAULT_TTL_S,
    retry_s: float = 30.0,
    socket_timeout_s: float = 5.0,
) -> StateStore:
    """Open the hot state.

    Parameters
    ----------
    backend
        ``memory`` or ``redis``.
    redis_url
        ``redis://[:password@]host:port/db``; required for ``redis``, ignored for ``memory``.
    retention_s
        Retention of the recent-alert window, s of event time behind the newest event time seen.
    prefix
        Prefix of every Redis key.
    ttl_s
        Lifetime of event states, done keys, claims and coincidences after their last write (s).
    retry_s
        Redis: how long a call keeps retrying while Redis is unreachable before raising
        :class:`~broker.errors.StateError` (s).
    socket_timeout_s
        Redis: read timeout of one command (s).

    Raises
    ------
    ConfigError
        Unknown backend, or ``redis`` without a URL.
    """
    if backend == "memory":
        return MemoryState(retention_s, ttl_s=ttl_s)
    if backend == "redis":
        if not redis_url:
            raise ConfigError("state backend 'redis' needs a Redis URL (MMBROKER_REDIS_URL)")
        return RedisState(redis_url, retention_s, prefix=prefix, ttl_s=ttl_s, retry_s=retry_s,
                          socket_timeout_s=socket_timeout_s)
    raise ConfigError(f"unknown state backend {backend!r} (expected one of {', '.join(STATE_BACKENDS)})")


def state_from_settings(settings: Settings) -> StateStore:
    """Open the hot state the settings describe.

    Uses ``state_backend``, ``redis_url``, ``window_retention_s``; Redis keys
    are prefixed ``<prefix>:state:`` so brokers with different prefixes can
    share one Redis.
    """
    url = None if settings.redis_url is None else settings.redis_url.get_secret_value()
    return open_state(settings.state_backend, url, settings.window_retention_s, prefix=f"{settings.prefix}:state:")

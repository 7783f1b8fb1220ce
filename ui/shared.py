# SPDX-License-Identifier: Apache-2.0
"""Streamlit glue shared by the pages: cached settings, archive, live feed and page registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from broker.config import Settings, load_settings
from broker.errors import BrokerError
from broker.model import Alert
from ui.backends import check_archive, current_settings, open_archive_readonly, recent_alerts_from_archive
from ui.livefeed import FeedSnapshot, LiveFeed

#: Alerts the live feed keeps (and reads back from Kafka at start).
FEED_CAPACITY = 500

_PAGES: dict[str, Any] = {}


@st.cache_resource(show_spinner=False)
def base_settings() -> Settings:
    """The process settings (environment and ``MMBROKER_CONFIG``), read once."""
    return load_settings()


def settings() -> Settings:
    """Settings, with the address of a running ``mmbroker up`` when no cluster is configured."""
    return current_settings(base_settings())


@st.cache_resource(show_spinner=False)
def _archive(backend: str, location: str) -> Any:
    return open_archive_readonly(settings())


def archive() -> tuple[Any | None, str | None]:
    """The archive and ``None``, or ``None`` and why it is unavailable (never raises)."""
    s = settings()
    key = (s.archive_backend, str(s.archive_path) if s.archive_backend == "sqlite" else s.elasticsearch_index)
    try:
        a = _archive(*key)
    except BrokerError as exc:
        return None, str(exc)
    try:
        check_archive(a, s)
    except BrokerError as exc:
        _archive.clear()
        return None, str(exc)
    return a, None


def archive_banner(error: str | None, what: str = "") -> None:
    """The error banner shown when the archive is down."""
    if error:
        st.error(f"Archive unavailable: {error}. {what}".strip(), icon=":material/error:")


def _stop_feed(feed: LiveFeed) -> None:
    feed.stop(timeout=1.0)


@st.cache_resource(show_spinner=False, on_release=_stop_feed)
def _feed() -> LiveFeed:
    base = base_settings()
    return LiveFeed(lambda: current_settings(base), capacity=FEED_CAPACITY).start()


def feed() -> FeedSnapshot:
    """The live feed as it is now (the consumer thread starts on first use)."""
    return _feed().snapshot()


def recent_alerts(limit: int, archive_obj: Any | None) -> tuple[list[Alert], str]:
    """The ``limit`` most recent alerts: from the live feed, else from the archive; and where they came from."""
    snap = feed()
    if snap.items:
        return [i.alert for i in snap.items[:limit]], f"live feed ({snap.topic})"
    if archive_obj is not None:
        try:
            return recent_alerts_from_archive(archive_obj, limit), "archive"
        except BrokerError:
            return [], "archive (unavailable)"
    return [], "nothing (no Kafka feed, no archive)"


def register_pages(pages: dict[str, Any]) -> None:
    """Remember the app's pages by key (for links and :func:`go`)."""
    _PAGES.clear()
    _PAGES.update(pages)


def page(key: str) -> Any:
    """The registered page ``key`` (``feed``, ``sky``, ``alert``, ``filters``, ``search``, ``subscribe``)."""
    return _PAGES[key]


def go(key: str, **query: str) -> None:
    """Switch to page ``key`` with query parameters."""
    st.switch_page(page(key), query_params=query or None)


@st.cache_data(max_entries=64, show_spinner=False)
def _png(key: tuple[Any, ...], _build: Callable[[], bytes | None]) -> bytes | None:
    return _build()


def cached_png(key: tuple[Any, ...], build: Callable[[], bytes | None]) -> bytes | None:
    """PNG bytes cached by ``key`` across sessions (plots are rebuilt only when their inputs change)."""
    return _png(key, build)

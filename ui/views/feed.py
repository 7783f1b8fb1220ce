# SPDX-License-Identifier: Apache-2.0
"""Live feed: the most recent alerts, read from Kafka, refreshed every few seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from broker.errors import BrokerError
from broker.model import MESSENGERS
from ui import shared
from ui.alerttables import FEED_COLUMNS, AlertRow, row_from_alert, row_from_summary, rows_html
from ui.backends import archive_call

REFRESH_S = 2.0


def feed_page() -> None:
    """The live feed page."""
    st.title("Live feed")
    st.caption("Alerts as the broker publishes them on Kafka (newest first, event times in UTC). "
               "The feed reads the alerts topic itself, so it keeps working when the archive is down.")
    c1, c2, c3 = st.columns([3, 1, 1])
    messengers = c1.multiselect("Messengers", MESSENGERS, placeholder="all messengers", key="feed_messengers")
    hide_tests = c2.toggle("Hide test alerts", value=False, key="feed_hide_tests")
    limit = c3.number_input("Rows", min_value=10, max_value=shared.FEED_CAPACITY, value=50, step=10,
                            key="feed_limit")
    _live(tuple(messengers), bool(hide_tests), int(limit))
    _open_alert()


def _open_alert() -> None:
    """Jump to an alert's page (outside the refreshing fragment, so the list stays open while choosing)."""
    items = shared.feed().items
    st.session_state["feed_open_missing"] = not items  # the fragment reruns the page when alerts arrive
    if not items:
        return
    labels = {f"{i.alert.event_name or i.alert.event_id} · {i.alert.mission} · {i.alert.kind} · "
              f"{i.alert.broker_id}": i.alert.broker_id for i in items}
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    choice = c1.selectbox("Open an alert", list(labels), index=None, placeholder="choose an alert", key="feed_open")
    if c2.button("Open alert", disabled=choice is None) and choice is not None:
        shared.go("alert", broker_id=labels[choice])


@st.fragment(run_every=REFRESH_S)
def _live(messengers: tuple[str, ...], hide_tests: bool, limit: int) -> None:
    archive, error = shared.archive()
    shared.archive_banner(error, "The live feed below comes from Kafka and keeps working.")
    snap = shared.feed()
    rows: list[AlertRow] = [row_from_alert(i.alert, _published(i.timestamp_ms)) for i in snap.items]
    source = f"Kafka topic {snap.topic}"
    if not rows and archive is not None:
        try:
            rows = [row_from_summary(s) for s in archive_call(archive, "recent", limit, default=[])]
        except BrokerError as exc:
            shared.archive_banner(str(exc))
        source = "the archive (Kafka feed not connected)"
    archived = None
    if archive is not None:
        try:
            archived = archive_call(archive, "count")
        except BrokerError:
            archived = None
    m1, m2, m3 = st.columns(3)
    m1.metric("Alerts received", snap.received)
    m2.metric("Archived alerts", "unavailable" if archived is None else archived)
    m3.metric("Kafka", "connected" if snap.connected else "not connected")
    if not snap.connected and snap.error:
        st.warning(f"Kafka feed: {snap.error}", icon=":material/warning:")
    elif snap.error:
        st.caption(f"Last Kafka notice: {snap.error}")
    shown = [r for r in rows if (not messengers or r.messenger in messengers) and not (hide_tests and r.is_test)]
    st.markdown(
        f"**{snap.received} alerts received** on `{snap.topic}` "
        f"({snap.bootstrap_servers or 'no cluster'}); showing {min(len(shown), limit)} from {source}."
    )
    if not shown:
        st.info("No alerts yet. Start the broker with `mmbroker up`, or wait for the next notice.")
        return
    if snap.items and st.session_state.get("feed_open_missing"):
        st.session_state["feed_open_missing"] = False
        st.rerun(scope="app")  # the first alerts arrived: draw the "open an alert" chooser too
    st.markdown(rows_html(shown[:limit], FEED_COLUMNS, table_id="feed-table"), unsafe_allow_html=True)


def _published(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)

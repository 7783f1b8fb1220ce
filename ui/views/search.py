# SPDX-License-Identifier: Apache-2.0
"""Search: the archive's query options, paginated results and downloads (JSON, CSV, VOTable)."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from broker.errors import BrokerError
from broker.model import MESSENGERS
from ui import shared
from ui.alerttables import row_from_summary, rows_html
from ui.backends import archive_call, has

COLUMNS = ("time", "event", "messenger", "instrument", "kind", "state", "tags", "position", "far", "matches")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def form_params(values: dict[str, Any]) -> dict[str, Any]:
    """Turn the form's values into ``Query.from_params`` keyword arguments (empty fields left out)."""
    out: dict[str, Any] = {}
    for k in ("ra", "dec", "radius", "since", "until", "text"):
        v = str(values.get(k) or "").strip()
        if v:
            out[k] = v
    if values.get("tag"):
        out["tag"] = _split(str(values["tag"]))
    if values.get("mission"):
        out["mission"] = _split(str(values["mission"]))
    if values.get("messenger"):
        out["messenger"] = list(values["messenger"])
    props = [line.strip() for line in str(values.get("prop") or "").splitlines() if line.strip()]
    if props:
        out["prop"] = props
    if values.get("latest"):
        out["latest"] = "true"
    out["sort"] = str(values.get("sort") or "time_desc")
    out["limit"] = str(values.get("limit") or 50)
    return out


def _property_help() -> str:
    try:
        from broker.archive.query import CORE_PROPERTIES
    except ImportError:
        return "name:low:high"
    lines = [f"- `{k}`: {v}" for k, v in CORE_PROPERTIES.items()]
    return "`name:low:high`, either end may be empty. Properties:\n" + "\n".join(lines) + (
        "\n- any numeric property of the alerts, or `classification.<class>` (e.g. `classification.BNS`)")


def _search_api() -> tuple[Any, Any, Any] | None:
    try:
        from broker.archive.export import export
        from broker.archive.query import Query, QueryError
    except ImportError:
        return None
    return Query, QueryError, export


def search_page() -> None:
    """The search page."""
    st.title("Search the archive")
    st.caption("Cone (RA, Dec, radius in deg, ICRS), event-time range (ISO 8601 UTC or MJD), tags (all required), "
               "messengers and missions (any of), numeric property ranges (`name:low:high`, either end may be "
               "empty; e.g. `far::1e-7` in Hz, `error_radius:0:1` in deg), free text on ids and names.")
    archive, error = shared.archive()
    if error or archive is None:
        shared.archive_banner(error, "Search needs the archive; the live feed still works.")
        return
    api = _search_api()
    if api is None or not has(archive, "search"):
        st.info("Search is not available yet: this archive backend does not answer queries.")
        return
    query_cls, query_error, export = api
    with st.form("search"):
        c1, c2, c3 = st.columns(3)
        ra = c1.text_input("RA (deg)", placeholder="0 to 360", key="q_ra")
        dec = c2.text_input("Dec (deg)", placeholder="-90 to 90", key="q_dec")
        radius = c3.text_input("Radius (deg)", placeholder="e.g. 5", key="q_radius")
        c1, c2 = st.columns(2)
        since = c1.text_input("Event time from (UTC ISO or MJD)", placeholder="2023-05-18T00:00:00", key="q_since")
        until = c2.text_input("Event time until (UTC ISO or MJD)", placeholder="2023-05-19", key="q_until")
        c1, c2, c3 = st.columns(3)
        tag = c1.text_input("Tags (comma-separated, all required)", placeholder="gw, gw-significant", key="q_tag")
        messenger = c2.multiselect("Messengers", MESSENGERS, key="q_messenger")
        mission = c3.text_input("Missions / instruments (comma-separated)", placeholder="Fermi, IceCube",
                                key="q_mission")
        c1, c2 = st.columns(2)
        prop = c1.text_area("Property ranges, one per line", placeholder="far::1e-7\nerror_radius:0:1", height=80,
                            key="q_prop", help=_property_help())
        text = c2.text_input("Text (event id, name, broker id, mission)", placeholder="S230518h", key="q_text")
        c1, c2, c3 = st.columns(3)
        latest = c1.checkbox("Latest revision of each event only", key="q_latest")
        sort = c2.selectbox("Order", ("time_desc", "time_asc"), key="q_sort",
                            format_func=lambda s: "newest first" if s == "time_desc" else "oldest first")
        limit = c3.number_input("Results per page", min_value=1, max_value=1000, value=50, key="q_limit")
        submitted = st.form_submit_button("Search", type="primary")
    if submitted:
        st.session_state["q_params"] = form_params({
            "ra": ra, "dec": dec, "radius": radius, "since": since, "until": until, "tag": tag,
            "messenger": messenger, "mission": mission, "prop": prop, "text": text, "latest": latest,
            "sort": sort, "limit": limit,
        })
        st.session_state["q_cursors"] = [None]
    params: dict[str, Any] | None = st.session_state.get("q_params")
    if params is None:
        known = archive_call(archive, "known_tags", default={}) or {}
        if known:
            st.caption("Tags in the archive: " + ", ".join(f"`{t}` ({n})" for t, n in sorted(known.items())))
        return
    cursors: list[str | None] = st.session_state.setdefault("q_cursors", [None])
    try:
        q = query_cls.from_params(**params, cursor=cursors[-1])
    except query_error as exc:
        st.error(f"Invalid search: {exc}", icon=":material/block:")
        return
    invalid: str | None = None
    failed: str | None = None
    page = None
    with st.status("Searching the archive...", expanded=False) as status:
        t0 = time.perf_counter()
        try:
            page = archive.search(q)
        except query_error as exc:
            invalid = str(exc)
            status.update(label="Invalid search", state="error")
        except BrokerError as exc:
            failed = str(exc)
            status.update(label="Search failed", state="error")
        else:
            ms = (time.perf_counter() - t0) * 1e3
            n = len(page.items)
            status.update(label=f"{n} result{'' if n == 1 else 's'} on this page in {ms:.0f} ms", state="complete")
    if invalid is not None:
        st.error(f"Invalid search: {invalid}", icon=":material/block:")
    elif failed is not None:
        shared.archive_banner(failed)
    if page is None:
        return
    _results(page, cursors, params, export, q)


def _results(page: Any, cursors: list[str | None], params: dict[str, Any], export: Any, q: Any) -> None:
    first = (len(cursors) - 1) * q.limit + 1
    total = f" of {page.total}" if page.total is not None else ""
    if not page.items:
        st.info("No alert matches this search.")
    else:
        st.markdown(f"**Results {first}–{first + len(page.items) - 1}{total}**")
        cols = (*COLUMNS, "separation") if q.cone is not None else COLUMNS
        st.markdown(rows_html([row_from_summary(s) for s in page.items], cols, table_id="search-results"),
                    unsafe_allow_html=True)
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("← Previous page", disabled=len(cursors) <= 1):
        cursors.pop()
        st.rerun()
    if c2.button("Next page →", disabled=page.next_cursor is None):
        cursors.append(page.next_cursor)
        st.rerun()
    if page.items:
        st.caption("Download this page of results:")
        d1, d2, d3, _ = st.columns([1, 1, 1, 3])
        for col, fmt, mime in ((d1, "json", "application/json"), (d2, "csv", "text/csv"),
                               (d3, "votable", "application/x-votable+xml")):
            try:
                data = export(list(page.items), fmt)
            except BrokerError as exc:
                col.error(f"{fmt}: {exc}")
                continue
            ext = "xml" if fmt == "votable" else fmt
            col.download_button(fmt.upper() if fmt != "votable" else "VOTable", data,
                                file_name=f"mmbroker-search.{ext}", mime=mime, key=f"dl_{fmt}")

# SPDX-License-Identifier: Apache-2.0
"""Filters: the registry (built-in and user filters), enabled state, statistics and run-time percentiles."""

from __future__ import annotations

from typing import Any

import streamlit as st

from broker.errors import BrokerError
from ui import shared
from ui.backends import FilterOverview, FilterRow, filter_overview


@st.cache_data(ttl=5.0, show_spinner=False)
def _overview(state_file: str, stats_file: str, user_dir: str) -> FilterOverview:
    return filter_overview(shared.settings())


def _us(v: Any) -> str:
    return "" if not isinstance(v, int | float) else f"{v * 1e6:.3g}"


def table_rows(rows: tuple[FilterRow, ...]) -> list[dict[str, Any]]:
    """The filters table: one dict per filter (run times per alert in µs)."""
    out = []
    for r in rows:
        st_ = r.stats
        rt = st_.get("runtime_s") or {}
        emitted = st_.get("tags") or {}
        out.append({
            "filter": r.name,
            "version": r.version,
            "kind": r.kind,
            "enabled": "enabled" if r.enabled else "disabled",
            "tags it may emit": ", ".join(r.tags),
            "calls": st_.get("calls", ""),
            "skips": st_.get("skips", ""),
            "errors": st_.get("errors", ""),
            "tags emitted": ", ".join(f"{k} ×{v}" for k, v in emitted.items()),
            "p50 (µs)": _us(rt.get("p50")),
            "p90 (µs)": _us(rt.get("p90")),
            "p99 (µs)": _us(rt.get("p99")),
            "runs timed": rt.get("samples", ""),
        })
    return out


def _runtime_png(rows: tuple[FilterRow, ...]) -> bytes | None:
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ui.skyplot import figure_png

    timed = [(r.name, r.stats.get("runtime_s") or {}) for r in rows]
    timed = [(n, rt) for n, rt in timed if isinstance(rt.get("p50"), int | float)]
    if not timed:
        return None
    fig = Figure(figsize=(8, 0.45 * len(timed) + 1.2))
    ax = fig.add_subplot(111)
    y = np.arange(len(timed))
    for k, (q, color) in enumerate((("p50", "#4c78a8"), ("p90", "#f58518"), ("p99", "#e45756"))):
        vals = [max(float(rt.get(q) or 0.0) * 1e6, 1e-3) for _, rt in timed]
        ax.barh(y + (k - 1) * 0.26, vals, height=0.25, color=color, label=q)
    ax.set_yticks(y)
    ax.set_yticklabels([n for n, _ in timed], fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("run time per alert (µs, log scale)")
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.5)
    return figure_png(fig)


def filters_page() -> None:
    """The filters page."""
    st.title("Filters")
    s = shared.settings()
    st.caption(f"Filters run by the worker on every alert; each tag it emits goes to `{s.tag_topic('<tag>')}`. "
               f"Switch one with `mmbroker filters disable NAME` / `enable NAME` (state file "
               f"`{s.filter_state_file}`).")
    try:
        ov = _overview(str(s.filter_state_file), str(s.filter_stats_file), str(s.user_filter_dir))
    except BrokerError as exc:
        st.error(f"Cannot read the filter registry: {exc}")
        return
    if ov.stats_error:
        st.error(ov.stats_error)
    if ov.stats_written:
        st.caption(f"Statistics written by the worker at {ov.stats_written.replace('T', ' ')[:19]} UTC "
                   f"(`{s.filter_stats_file}`).")
    else:
        st.info(f"No statistics yet: the running worker writes them to `{s.filter_stats_file}`.")
    enabled = sum(r.enabled for r in ov.rows)
    c1, c2, c3 = st.columns(3)
    c1.metric("Registered filters", len(ov.rows))
    c2.metric("Enabled", enabled)
    c3.metric("Refused", len(ov.refused))
    if not ov.rows:
        st.info("No filter is registered.")
    else:
        st.table(table_rows(ov.rows))
        png = _runtime_png(ov.rows)
        if png is not None:
            st.subheader("Run-time percentiles")
            st.image(png, alt="Run-time percentiles per filter", width="stretch")
    disabled = [r for r in ov.rows if not r.enabled]
    for r in disabled:
        st.warning(f"{r.name} is disabled: {r.reason or 'no reason given'}")
    for r in ov.rows:
        if r.stats.get("last_error"):
            st.warning(f"{r.name}: last error: {r.stats['last_error']}")
    with st.expander("Descriptions and origins"):
        for r in ov.rows:
            st.markdown(f"**{r.name}** {r.version} ({r.kind}) — {r.description or 'no description'}  \n"
                        f"`{r.origin}`")
    for p in ov.pending:
        st.info(f"User filter not registered by a worker yet: {p}")
    for e in ov.refused:
        st.error(f"Refused: {e}")

# SPDX-License-Identifier: Apache-2.0
"""Alert page: one alert revision with its localization, catalog matches, coincidences, revisions and raw notice.

Selected by query parameters: ``?broker_id=mmb-...`` (one revision) or
``?event=LVK/S230518h`` / ``?event=S230518h`` (the latest revision of an event).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import streamlit as st

from broker.errors import BrokerError
from broker.model import Alert, Circle, Ellipse, Point, Rectangle
from ui import shared
from ui.alerttables import RETRACTION_STATES, alert_href, kv_html, row_from_alert, rows_html, utc
from ui.backends import archive_call, coincidences_of

RAW_SHOWN = 20_000  # characters of a raw notice shown inline (the download has all of it)


def find_alert(archive: Any, broker_id: str | None, event: str | None) -> tuple[Alert | None, str | None]:
    """The alert asked for, from the archive or else the live feed, and a message when not found."""
    feed_items = [i.alert for i in shared.feed().items]
    if broker_id:
        alert = None
        if archive is not None:
            alert = archive_call(archive, "get", broker_id)
        if alert is None:
            alert = next((a for a in feed_items if a.broker_id == broker_id), None)
        return alert, None if alert is not None else f"No alert with broker id {broker_id!r}."
    if event:
        alert = None
        if archive is not None:
            alert = _latest_from_archive(archive, event)
        if alert is None:
            matches = [a for a in feed_items if event in (a.event_key, a.event_id, a.event_name)]
            alert = matches[0] if matches else None  # feed is newest first
        return alert, None if alert is not None else f"No alert for event {event!r}."
    return None, None


def _latest_from_archive(archive: Any, event: str) -> Alert | None:
    if "/" in event:
        latest = archive_call(archive, "latest", event)
        if latest is not None:
            return latest
        revisions = list(archive_call(archive, "revisions", event, default=[]) or [])
        return revisions[-1] if revisions else None
    try:
        from broker.archive.query import Query
    except ImportError:
        return None
    page = archive_call(archive, "search", Query(text=event, latest_only=True, limit=20))
    if page is None:
        return None
    exact = [s for s in page.items if event in (s.event_id, s.event_name)] or list(page.items)
    if not exact:
        return None
    return archive_call(archive, "latest", exact[0].event_key) or archive_call(archive, "get", exact[0].broker_id)


def alert_page() -> None:
    """The alert page."""
    st.title("Alert")
    archive, error = shared.archive()
    shared.archive_banner(error, "Only alerts still in the live feed can be shown; revisions and raw notices need "
                                 "the archive.")
    params = st.query_params
    broker_id, event = params.get("broker_id"), params.get("event")
    with st.expander("Choose another alert", expanded=not (broker_id or event)):
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        typed = c1.text_input("Broker id, event key (Mission/event id) or event name", placeholder="S230518h")
        if c2.button("Show") and typed.strip():
            t = typed.strip()
            key = "broker_id" if t.startswith("mmb-") else "event"
            st.query_params.from_dict({key: t})
            st.rerun()
    if not (broker_id or event):
        st.info("Choose an alert above, or open one from the live feed or the search page.")
        return
    try:
        alert, missing = find_alert(archive, broker_id, event)
    except BrokerError as exc:
        shared.archive_banner(str(exc))
        alert, missing = find_alert(None, broker_id, event)
    if alert is None:
        st.warning(missing or "Alert not found.")
        return
    _header(alert)
    _properties(alert)
    _localization(alert)
    _matches(alert)
    _coincidences(alert, archive)
    _revisions(alert, archive)
    _raw(alert, archive)


def _header(alert: Alert) -> None:
    name = alert.event_name or alert.event_id
    inst = f" / {alert.instrument}" if alert.instrument else ""
    st.header(f"{name} — {alert.mission}{inst}")
    rev = "" if alert.revision is None else f", revision {alert.revision}"
    st.markdown(f"**{alert.kind.replace('_', ' ')}**{rev} · messenger **{alert.messenger}** · "
                f"{alert.notice_type} · broker id `{alert.broker_id}`")
    if alert.kind == "retraction" or (alert.revision_state or "") in RETRACTION_STATES:
        st.error(f"RETRACTED: this revision retracts {alert.event_key}.", icon=":material/cancel:")
    elif alert.revision_state == "after_retraction":
        st.warning("This revision arrived after the event was retracted.")
    elif alert.revision_state == "stale":
        st.warning("Stale revision: a newer revision of this event had already arrived.")
    if alert.is_test:
        st.info("Test alert (not a real astrophysical event).")
    if alert.tags:
        st.markdown("Tags: " + " ".join(f"`{t}`" for t in alert.tags))


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def properties_of(alert: Alert) -> list[tuple[str, str]]:
    """(name, value) pairs describing ``alert`` (times UTC, angles deg, FAR Hz)."""
    out: list[tuple[str, str]] = [
        ("Event time (UTC)", utc(alert.event_time)),
        ("Issued (UTC)", utc(alert.issued)),
        ("Event key", alert.event_key),
        ("Revision state", alert.revision_state or ""),
    ]
    if alert.previous_broker_id:
        out.append(("Previous revision", alert.previous_broker_id))
    if alert.dropped_tags:
        out.append(("Tags dropped by this update", ", ".join(alert.dropped_tags)))
    if alert.upstream_ids:
        out.append(("Upstream ids", ", ".join(alert.upstream_ids)))
    r = alert.region
    if isinstance(r, Circle):
        cont = f" at {r.containment:.0%}" if r.containment else ""
        out.append(("Position (RA, Dec, deg)", f"{r.ra:.4f}, {r.dec:+.4f}"))
        out.append(("Error radius (deg)", f"{r.radius:.4g}{cont}"))
    elif isinstance(r, Ellipse):
        out.append(("Position (RA, Dec, deg)", f"{r.ra:.4f}, {r.dec:+.4f}"))
        out.append(("Error ellipse (deg)", f"{r.semi_major:.4g} × {r.semi_minor:.4g}, PA {r.position_angle:.1f}°"))
    elif isinstance(r, Rectangle):
        out.append(("Position (RA, Dec, deg)", f"{r.ra:.4f}, {r.dec:+.4f}"))
        out.append(("Error region corners (deg)", "; ".join(f"{a:.3f}, {b:+.3f}" for a, b in r.corners)))
    elif isinstance(r, Point):
        out.append(("Position (RA, Dec, deg)", f"{r.ra:.4f}, {r.dec:+.4f}"))
    if alert.skymap is not None:
        sm = alert.skymap
        out.append(("Sky map", f"{sm.uniq.size} pixels ({sm.source})"))
        out.append(("90 % / 50 % area (deg²)", f"{sm.credible_area(0.9):.1f} / {sm.credible_area(0.5):.1f}"))
        if sm.distmean is not None:
            out.append(("Distance (Mpc)", f"{sm.distmean:.0f} ± {sm.diststd or 0:.0f}"))
    if alert.skymap_url:
        out.append(("Sky map URL", alert.skymap_url))
    if alert.far is not None:
        out.append(("False-alarm rate", f"{alert.far:.3g} Hz ({alert.far * 3.15576e7:.3g} per year)"))
    if alert.significant is not None:
        out.append(("Significant", "yes" if alert.significant else "no"))
    for k, p in sorted(alert.classification.items()):
        out.append((f"Classification {k}", f"{p:.3g}"))
    for k, v in sorted(alert.properties.items()):
        out.append((k, _fmt(v)))
    for rel in alert.related:
        what = " ".join(x for x in (rel.observatory, rel.event_id, rel.search) if x)
        dt = "" if rel.time_difference is None else f", Δt {rel.time_difference:+.3f} s"
        out.append((f"Related ({rel.relation})", f"{what}{dt}"))
    out.append(("Parsed from", f"{alert.provenance.source_format} (parser {alert.provenance.parser_version}), "
                               f"{alert.provenance.raw_size} bytes"))
    return out


def _properties(alert: Alert) -> None:
    st.subheader("Properties")
    st.markdown(kv_html(properties_of(alert)), unsafe_allow_html=True)
    for ann in alert.annotations:
        if ann.status == "missing":
            st.warning(f"Annotation {ann.annotator} missing: {ann.reason}")


def _loc_png(alert: Alert) -> bytes | None:
    from ui import skyplot as sky

    fig = sky.localization_figure(alert)
    return None if fig is None else sky.figure_png(fig)


def _allsky_png(alert: Alert) -> bytes | None:
    from ui import skyplot as sky

    fig = sky.skymap_allsky_figure(alert)
    return None if fig is None else sky.figure_png(fig)


def _localization(alert: Alert) -> None:
    st.subheader("Localization")
    if alert.position is None:
        st.info("This alert has no localization.")
        return
    with st.spinner("Drawing the localization..."):
        png = shared.cached_png(("loc", alert.broker_id), lambda: _loc_png(alert))
        allsky = shared.cached_png(("allsky-one", alert.broker_id), lambda: _allsky_png(alert))
    cols = st.columns(2) if allsky is not None else [st.container()]
    if png is not None:
        cols[0].image(png, caption="Zoom (gnomonic projection, east to the left) with the matched catalog sources",
                      alt="Localization of the alert", width="stretch")
    if allsky is not None:
        cols[1].image(allsky, caption="All-sky view of the sky map (RA increasing to the left)",
                      alt="All-sky view of the alert's sky map", width="stretch")


def _matches(alert: Alert) -> None:
    st.subheader("Catalog matches")
    rows = [
        {"annotator": ann.annotator, "catalog": m.catalog, "source": m.source_id, "RA (deg)": f"{m.ra:.4f}",
         "Dec (deg)": f"{m.dec:+.4f}", "separation (deg)": f"{m.separation:.4f}",
         "containment": "" if m.containment is None else f"{m.containment:.3f}",
         "in 90 % region": {True: "yes", False: "no", None: ""}[m.source_in_region],
         "distance (Mpc)": "" if m.distance is None else f"{m.distance:.1f}",
         "dP/dV (Mpc⁻³)": "" if m.dp_dv is None else f"{m.dp_dv:.3g}"}
        for ann in alert.annotations if ann.status == "ok" for m in ann.matches
    ]
    counts = {k: v for ann in alert.annotations for k, v in ann.properties.items() if k.startswith("n_")}
    if counts:
        st.caption("Sources in the region per catalog (before the per-catalog cap): "
                   + ", ".join(f"{k[2:]} {v}" for k, v in sorted(counts.items())))
    if rows:
        st.table(rows)
    else:
        st.info("No catalog matches for this alert.")


def _coincidences(alert: Alert, archive: Any) -> None:
    st.subheader("Coincidences")
    try:
        found = coincidences_of([alert], archive, alert.event_key)
    except BrokerError as exc:
        shared.archive_banner(str(exc))
        found = coincidences_of([alert], None, alert.event_key)
    if not found:
        st.info("No coincidences for this event yet.")
        return
    st.table([
        {"rule": c.rule, "tag": c.tag, "status": c.status,
         "other event": c.other_event_key(alert.event_key),
         "Δt = t_b − t_a (s)": f"{c.time_difference:+.3f}", "spatial test": c.spatial_test,
         "overlap": _num(c.overlap), "separation (deg)": _num(c.separation),
         "joint FAR (Hz)": _num(c.far_spatiotemporal if c.far_spatiotemporal is not None else c.far_temporal),
         "reason": c.reason or ""}
        for c in found
    ])


def _revisions(alert: Alert, archive: Any) -> None:
    st.subheader("Revisions")
    if archive is None:
        st.info("Revisions need the archive.")
        return
    try:
        revisions = list(archive_call(archive, "revisions", alert.event_key, default=[]) or [])
        latest = archive_call(archive, "latest", alert.event_key)
    except BrokerError as exc:
        shared.archive_banner(str(exc))
        return
    if not revisions:
        st.info("The archive holds no revision of this event yet.")
        return
    if latest is None:
        candidates = [a for a in revisions if a.revision_state != "stale"] or revisions
        latest = candidates[-1]
    rows = [row_from_alert(a) for a in revisions]
    st.caption(f"{len(rows)} revision(s) of {alert.event_key}, oldest first; the latest is marked.")
    table = rows_html(rows, ("time", "event", "kind", "state", "tags", "position",
                             "broker_id"), table_id="revisions-table")
    for r in rows:
        marks = []
        if r.broker_id == latest.broker_id:
            marks.append("<b>latest</b>")
        if r.broker_id == alert.broker_id:
            marks.append("<i>shown</i>")
        if marks:
            table = table.replace(f"<code>{r.broker_id}</code>",
                                  f"<code>{r.broker_id}</code> ← {' · '.join(marks)}", 1)
    st.markdown(table, unsafe_allow_html=True)
    if latest.broker_id != alert.broker_id:
        st.markdown(f"A later revision exists: [open the latest]({alert_href(latest.broker_id)}).")


def _raw(alert: Alert, archive: Any) -> None:
    st.subheader("Raw notice")
    if archive is None:
        st.info("The raw notice needs the archive.")
        return
    try:
        raw = archive_call(archive, "raw", alert.provenance.raw_sha256)
    except BrokerError as exc:
        shared.archive_banner(str(exc))
        return
    if raw is None:
        st.info("The archive does not hold this alert's raw notice.")
        return
    ext = {"voevent": "xml", "gcn_json": "json", "igwn_json": "json", "igwn_avro": "avro"}.get(
        alert.provenance.source_format, "bin")
    st.download_button("Download the raw notice", raw, file_name=f"{alert.event_id}.{ext}",
                       mime="application/octet-stream")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        st.caption(f"Binary {alert.provenance.source_format} payload, {len(raw)} bytes (SHA-256 "
                   f"{alert.provenance.raw_sha256}); first bytes:")
        st.code(raw[:512].hex(" ", 16), language=None)
        return
    if ext == "json":
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2)
    if len(text) > RAW_SHOWN:
        st.caption(f"First {RAW_SHOWN} of {len(text)} characters (download for all).")
        text = text[:RAW_SHOWN]
    with st.expander(f"{alert.provenance.source_format} notice, {len(raw)} bytes", expanded=len(raw) <= RAW_SHOWN):
        st.code(text, language="xml" if ext == "xml" else "json")

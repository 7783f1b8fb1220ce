# SPDX-License-Identifier: Apache-2.0
"""Sky map: recent alerts on an all-sky Mollweide map (equatorial, RA increasing to the left)."""

from __future__ import annotations

import streamlit as st

from broker.errors import BrokerError
from broker.model import MESSENGERS, Alert, Coincidence
from ui import shared
from ui.backends import coincidences_of


def _png(alerts: list[Alert], coincidences: list[Coincidence], contours: bool) -> bytes:
    from ui import skyplot as sky

    fig, _ = sky.allsky_figure(alerts, coincidences, contours=contours,
                               title=f"{len(alerts)} recent alerts (equatorial ICRS, Mollweide)")
    return sky.figure_png(fig)


def sky_page() -> None:
    """The all-sky map page."""
    st.title("Sky map")
    st.caption("All-sky Mollweide projection, equatorial (ICRS) coordinates in degrees, right ascension increasing "
               "to the left, centred on RA 180°. Dashed line: the Galactic plane (× its centre). Points are best "
               "positions with their error regions; GW and GBM sky maps show their 90 % credible region "
               "(50 % dotted); black arcs link coincidences.")
    archive, error = shared.archive()
    shared.archive_banner(error, "The map shows the live feed's alerts; coincidences from the archive are missing.")
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1], vertical_alignment="bottom")
    limit = c1.number_input("Recent alerts", min_value=10, max_value=shared.FEED_CAPACITY, value=200, step=10)
    messengers = c2.multiselect("Messengers", MESSENGERS, placeholder="all messengers")
    tests = c3.toggle("Include test alerts", value=True)
    contours = c4.toggle("Sky-map contours", value=True)
    alerts, source = shared.recent_alerts(int(limit), archive)
    alerts = [a for a in alerts if (not messengers or a.messenger in messengers) and (tests or not a.is_test)]
    try:
        coincidences = coincidences_of(alerts, archive)
    except BrokerError as exc:
        shared.archive_banner(str(exc))
        coincidences = coincidences_of(alerts, None)
    if not alerts:
        st.info("No alerts to show yet.")
        return
    key = ("allsky", tuple(a.broker_id for a in alerts),
           tuple(sorted((c.coincidence_id, c.status) for c in coincidences)), bool(contours))
    with st.spinner("Drawing the sky map..."):
        png = shared.cached_png(key, lambda: _png(alerts, coincidences, bool(contours)))
    located = [a for a in alerts if a.position is not None]
    with_maps = [a for a in alerts if a.skymap is not None or a.annotation("skymap") is not None]
    if png is None:
        return
    st.image(png, caption=f"{len(located)} of {len(alerts)} alerts have a position; {len(with_maps)} have a sky map "
                          f"(source: {source}).", alt="All-sky map of recent alerts", width="stretch")
    st.subheader("Coincidences")
    if not coincidences:
        st.info("No coincidences yet.")
    else:
        st.table([
            {"rule": c.rule, "tag": c.tag, "status": c.status, "a": c.a_event_key, "b": c.b_event_key,
             "Δt = t_b − t_a (s)": f"{c.time_difference:+.3f}",
             "separation (deg)": "" if c.separation is None else f"{c.separation:.3f}",
             "joint FAR (Hz)": _fmt(c.far_spatiotemporal if c.far_spatiotemporal is not None else c.far_temporal)}
            for c in coincidences
        ])
    if with_maps:
        st.subheader("Sky maps")
        st.table([skymap_row(a) for a in with_maps])


def skymap_row(alert: Alert) -> dict[str, str]:
    """One row of the sky-map table: areas (deg^2) and distance (Mpc), from the annotation or the map."""
    ann = alert.annotation("skymap")
    props = dict(ann.properties) if ann is not None else {}
    sm = alert.skymap
    if sm is not None:
        props.setdefault("area_90_deg2", sm.credible_area(0.9))
        props.setdefault("area_50_deg2", sm.credible_area(0.5))
        if sm.distmean is not None:
            props.setdefault("distmean_mpc", sm.distmean)
    return {"event": alert.event_name or alert.event_id, "mission": alert.mission, "kind": alert.kind,
            "90 % area (deg²)": _fmt(props.get("area_90_deg2"), ".1f"),
            "50 % area (deg²)": _fmt(props.get("area_50_deg2"), ".1f"),
            "distance (Mpc)": _fmt(props.get("distmean_mpc"), ".0f")}


def _fmt(v: object, spec: str = ".3g") -> str:
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else ""

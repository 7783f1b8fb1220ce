# SPDX-License-Identifier: Apache-2.0
"""Sky plots of the dashboard, with the astronomy conventions.

Every plot is equatorial (ICRS), in degrees, with right ascension increasing
to the left.  The all-sky maps are Mollweide projections centred on
RA = 180 deg: RA 0 deg is the right edge, RA 360 deg the left edge.  Zoomed
localization plots use the gnomonic (tangent-plane) projection around the
alert's best position, east to the left.

The functions build :class:`matplotlib.figure.Figure` objects directly (no
``pyplot`` state, safe in Streamlit's threads) and :func:`figure_png` turns
them into PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import healpy as hp
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from broker.model import Alert, Circle, Coincidence, Ellipse, Rectangle, Region, SkyMap

FloatArray = npt.NDArray[np.float64]

#: Colour of each messenger on every plot.
MESSENGER_COLORS: dict[str, str] = {
    "gw": "#7b2cbf",
    "neutrino": "#1f77b4",
    "gamma": "#d62728",
    "xray": "#ff7f0e",
    "optical": "#2ca02c",
    "radio": "#8c564b",
    "unknown": "#7f7f7f",
}

#: Credible levels drawn for sky maps.
LEVELS: tuple[float, ...] = (0.5, 0.9)


# --------------------------------------------------------------------------------------------- geometry


def mollweide_x(ra: npt.ArrayLike) -> FloatArray:
    """Horizontal Mollweide coordinate (rad, in [-pi, pi]) of right ascensions ``ra`` (deg).

    The map is centred on RA 180 deg and RA increases to the left:
    ``mollweide_x(0) == pi`` (right edge), ``mollweide_x(90) == pi / 2``,
    ``mollweide_x(270) == -pi / 2``.
    """
    return np.radians(180.0 - np.mod(np.asarray(ra, dtype=np.float64), 360.0))


def ra_of_x(x: npt.ArrayLike) -> FloatArray:
    """Right ascension (deg, in [0, 360)) at the horizontal Mollweide coordinate ``x`` (rad)."""
    return np.mod(180.0 - np.degrees(np.asarray(x, dtype=np.float64)), 360.0)


def small_circle(ra: float, dec: float, radius: float, n: int = 90) -> tuple[FloatArray, FloatArray]:
    """Points (RA, Dec in deg) on the circle of ``radius`` deg around (``ra``, ``dec``) deg."""
    return ellipse_outline(ra, dec, radius, radius, 0.0, n)


def ellipse_outline(
    ra: float, dec: float, semi_major: float, semi_minor: float, position_angle: float, n: int = 90
) -> tuple[FloatArray, FloatArray]:
    """Points (RA, Dec in deg) on an ellipse on the sphere.

    Parameters
    ----------
    ra, dec
        Centre (deg).
    semi_major, semi_minor
        Semi-axes, angular distances from the centre (deg).
    position_angle
        Direction of the major axis, east of north (deg).
    n
        Number of points (the first is repeated at the end to close the outline).
    """
    bearing = np.linspace(0.0, 2.0 * np.pi, n + 1)
    t = bearing - np.radians(position_angle)
    a, b = np.radians(semi_major), np.radians(semi_minor)
    denom = np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    r = np.where(denom > 0, a * b / np.where(denom > 0, denom, 1.0), 0.0)
    return destination(ra, dec, r, bearing)


def destination(ra: float, dec: float, distance: FloatArray, bearing: FloatArray) -> tuple[FloatArray, FloatArray]:
    """RA, Dec (deg) reached from (``ra``, ``dec``) deg going ``distance`` rad along ``bearing`` rad (east of north)."""
    d0, a0 = np.radians(dec), np.radians(ra)
    sin_d = np.sin(d0) * np.cos(distance) + np.cos(d0) * np.sin(distance) * np.cos(bearing)
    d = np.arcsin(np.clip(sin_d, -1.0, 1.0))
    a = a0 + np.arctan2(np.sin(bearing) * np.sin(distance) * np.cos(d0), np.cos(distance) - np.sin(d0) * sin_d)
    return np.mod(np.degrees(a), 360.0), np.degrees(d)


def great_circle(ra1: float, dec1: float, ra2: float, dec2: float, n: int = 64) -> tuple[FloatArray, FloatArray]:
    """Points (RA, Dec in deg) along the shorter great-circle arc between two positions (deg)."""
    v1 = hp.ang2vec(ra1, dec1, lonlat=True)
    v2 = hp.ang2vec(ra2, dec2, lonlat=True)
    omega = np.arccos(np.clip(np.dot(v1, v2), -1.0, 1.0))
    t = np.linspace(0.0, 1.0, n)[:, None]
    if omega < 1e-9:
        vecs = np.repeat(v1[None, :], n, axis=0)
    else:
        vecs = (np.sin((1 - t) * omega) * v1 + np.sin(t * omega) * v2) / np.sin(omega)
    ra, dec = hp.vec2ang(vecs, lonlat=True)
    return np.mod(ra, 360.0), dec


def split_at_wrap(x: FloatArray, y: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
    """Cut a polyline in projected coordinates (rad) where it jumps across the map edge."""
    if x.size < 2:
        return [(x, y)]
    cuts = np.flatnonzero(np.abs(np.diff(x)) > np.pi) + 1
    return [(xs, ys) for xs, ys in zip(np.split(x, cuts), np.split(y, cuts), strict=True) if xs.size]


def region_outline(region: Region) -> tuple[FloatArray, FloatArray] | None:
    """The outline (RA, Dec in deg) of an error region; None for a point."""
    if isinstance(region, Circle):
        return small_circle(region.ra, region.dec, region.radius)
    if isinstance(region, Ellipse):
        return ellipse_outline(region.ra, region.dec, region.semi_major, region.semi_minor, region.position_angle)
    if isinstance(region, Rectangle) and region.corners:
        corners = [*region.corners, region.corners[0]]
        ras: list[float] = []
        decs: list[float] = []
        for (r1, d1), (r2, d2) in zip(corners[:-1], corners[1:], strict=True):
            r, d = great_circle(r1, d1, r2, d2, 16)
            ras.extend(r)
            decs.extend(d)
        return np.array(ras), np.array(decs)
    return None


@lru_cache(maxsize=1)
def galactic_plane(step: float = 1.0) -> tuple[FloatArray, FloatArray]:
    """RA, Dec (deg) of the Galactic plane (b = 0), every ``step`` deg of longitude."""
    from astropy.coordinates import SkyCoord

    lon = np.arange(0.0, 360.0 + step, step)
    c = SkyCoord(l=lon, b=np.zeros_like(lon), unit="deg", frame="galactic").icrs
    return np.asarray(c.ra.deg, dtype=np.float64), np.asarray(c.dec.deg, dtype=np.float64)


@lru_cache(maxsize=1)
def galactic_centre() -> tuple[float, float]:
    """RA, Dec (deg) of the Galactic centre."""
    from astropy.coordinates import SkyCoord

    c = SkyCoord(l=0.0, b=0.0, unit="deg", frame="galactic").icrs
    return float(c.ra.deg), float(c.dec.deg)


# --------------------------------------------------------------------------------------------- HEALPix rasters


def uniq_order(uniq: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """HEALPix order of NUNIQ indices (exact, integer arithmetic)."""
    u = np.asarray(uniq, dtype=np.int64)
    order = (np.floor(np.log2(np.maximum(u, 4).astype(np.float64))).astype(np.int64) - 2) // 2
    order -= u < (np.int64(4) << (2 * order))
    order += u >= (np.int64(16) << (2 * order))
    return order


def _lookup(uniq: npt.NDArray[np.int64], ra: FloatArray, dec: FloatArray) -> npt.NDArray[np.int64]:
    """Index into ``uniq`` (a multi-order tiling) of the pixel holding each position; -1 where none does."""
    sorter = np.argsort(uniq, kind="stable")
    sorted_u = uniq[sorter]
    out = np.full(ra.shape, -1, dtype=np.int64)
    for order in np.unique(uniq_order(uniq)):
        nside = 1 << int(order)
        cand = 4 * np.int64(nside) ** 2 + hp.ang2pix(nside, ra, dec, nest=True, lonlat=True).astype(np.int64)
        pos = np.clip(np.searchsorted(sorted_u, cand), 0, sorted_u.size - 1)
        hit = (sorted_u[pos] == cand) & (out < 0)
        out[hit] = sorter[pos[hit]]
    return out


def moc_contains(moc: npt.ArrayLike, ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Whether each position (deg) lies inside a multi-order coverage map given as NUNIQ indices."""
    m = np.asarray(moc, dtype=np.int64)
    r = np.asarray(ra, dtype=np.float64)
    d = np.asarray(dec, dtype=np.float64)
    if m.size == 0:
        return np.zeros(r.shape, dtype=bool)
    return _lookup(m, r, d) >= 0


def credible_levels(skymap: SkyMap) -> FloatArray:
    """Credible level of each pixel of ``skymap``: the probability of the denser pixels plus its own.

    A pixel is inside the ``p`` credible region when its level is <= ``p``.
    """
    order = np.argsort(-skymap.probdensity, kind="stable")
    prob = skymap.probability
    cum = np.cumsum(prob[order])
    levels = np.empty_like(cum)
    levels[order] = cum / cum[-1]
    return levels


def skymap_levels_at(skymap: SkyMap, ra: npt.ArrayLike, dec: npt.ArrayLike) -> FloatArray:
    """Credible level (see :func:`credible_levels`) of the sky map at each position (deg); 1 off the map."""
    r = np.asarray(ra, dtype=np.float64)
    d = np.asarray(dec, dtype=np.float64)
    idx = _lookup(np.asarray(skymap.uniq, dtype=np.int64), r, d)
    levels = credible_levels(skymap)
    return np.where(idx >= 0, levels[np.maximum(idx, 0)], 1.0)


@dataclass(frozen=True)
class Contours:
    """Credible regions of one alert on a grid: ``level -> inside`` masks (same shape as the grid)."""

    levels: dict[float, npt.NDArray[np.bool_]]
    source: str  # "annotation" (the annotator's MOCs) or "skymap" (computed from the map)


def alert_contours(alert: Alert, ra: FloatArray, dec: FloatArray) -> Contours | None:
    """Credible-region masks of ``alert`` on the grid (deg), from its sky-map annotation or its sky map."""
    ann = alert.annotation("skymap")
    if ann is not None and ann.credible_regions:
        return Contours({cr.level: moc_contains(cr.moc, ra, dec) for cr in ann.credible_regions}, "annotation")
    if alert.skymap is not None:
        lv = skymap_levels_at(alert.skymap, ra, dec)
        return Contours({p: lv <= p for p in LEVELS}, "skymap")
    return None


@lru_cache(maxsize=4)
def allsky_grid(nx: int = 720, ny: int = 360) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """A regular grid over the Mollweide map: X, Y (rad, projected) and RA, Dec (deg) of each node."""
    x = np.linspace(-np.pi, np.pi, nx)
    y = np.linspace(-np.pi / 2, np.pi / 2, ny)
    xx, yy = np.meshgrid(x, y)
    return xx, yy, ra_of_x(xx), np.degrees(yy)


# --------------------------------------------------------------------------------------------- figures


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _allsky_axes(fig: Figure) -> Axes:
    ax = fig.add_subplot(111, projection="mollweide")
    ax.grid(True, color="#bbbbbb", linewidth=0.5)
    ticks = np.radians(np.arange(-150, 151, 30))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{ra:.0f}°" for ra in ra_of_x(ticks)], fontsize=8, color="#444444")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("Right ascension (deg, ICRS; increases to the left)", fontsize=9)
    ax.set_ylabel("Declination (deg)", fontsize=9)
    gra, gdec = galactic_plane()
    for xs, ys in split_at_wrap(mollweide_x(gra), np.radians(gdec)):
        ax.plot(xs, ys, color="#555555", linewidth=1.0, linestyle="--", zorder=1)
    cra, cdec = galactic_centre()
    ax.plot(mollweide_x(cra), np.radians(cdec), marker="x", color="#555555", markersize=6, zorder=1)
    return ax


def _plot_outline(ax: Axes, ra: FloatArray, dec: FloatArray, color: str, **kw: object) -> None:
    for xs, ys in split_at_wrap(mollweide_x(ra), np.radians(dec)):
        ax.plot(xs, ys, color=color, **kw)  # type: ignore[arg-type]


def _contour(ax: Axes, xx: FloatArray, yy: FloatArray, mask: npt.NDArray[np.bool_], color: str, **kw: object) -> bool:
    if not mask.any():
        return False
    ax.contour(xx, yy, mask.astype(np.float64), levels=[0.5], colors=[color], **kw)  # type: ignore[arg-type]
    return True


@dataclass(frozen=True)
class SkyMapSummary:
    """What :func:`allsky_figure` drew (for the page's caption and the tests)."""

    points: int
    circles: int
    contours: int
    links: int


def allsky_figure(
    alerts: Sequence[Alert],
    coincidences: Iterable[Coincidence] = (),
    positions: dict[str, tuple[float, float]] | None = None,
    contours: bool = True,
    title: str | None = None,
) -> tuple[Figure, SkyMapSummary]:
    """All-sky Mollweide map of ``alerts``: points, error regions, 90 % sky-map contours, coincidence links.

    Parameters
    ----------
    alerts
        Alerts to draw (those without a position are skipped).
    coincidences
        Coincidences to link by a great-circle arc between the two sides' positions.
    positions
        Extra broker id -> (RA, Dec) deg, for coincidence sides not in ``alerts``.
    contours
        Draw the 90 % credible region of each sky map (and 50 %, dotted).
    title
        Figure title.
    """
    fig = Figure(figsize=(11, 6.2))
    ax = _allsky_axes(fig)
    known = dict(positions or {})
    n_points = n_circles = n_contours = n_links = 0
    seen_messengers: set[str] = set()
    xx, yy, gra, gdec = allsky_grid()
    for alert in alerts:
        color = MESSENGER_COLORS.get(alert.messenger, MESSENGER_COLORS["unknown"])
        pos = alert.position
        if contours and (alert.skymap is not None or alert.annotation("skymap") is not None):
            found = alert_contours(alert, gra, gdec)
            if found is not None:
                drew = False
                for level, mask in found.levels.items():
                    style = "solid" if level >= 0.9 else "dotted"
                    drew |= _contour(ax, xx, yy, mask, color, linewidths=1.2, linestyles=style)
                n_contours += int(drew)
        if pos is None:
            continue
        known[alert.broker_id] = pos
        seen_messengers.add(alert.messenger)
        ax.plot(mollweide_x(pos[0]), np.radians(pos[1]), marker="o", markersize=4, color=color, zorder=3)
        n_points += 1
        if alert.region is not None and alert.skymap is None:
            outline = region_outline(alert.region)
            if outline is not None:
                _plot_outline(ax, *outline, color, linewidth=0.9, alpha=0.8, zorder=2)
                n_circles += 1
    for c in coincidences:
        a, b = known.get(c.a_broker_id), known.get(c.b_broker_id)
        if a is None or b is None:
            continue
        r, d = great_circle(a[0], a[1], b[0], b[1])
        _plot_outline(ax, r, d, "#000000", linewidth=1.6, linestyle="-" if c.status == "active" else ":", zorder=4)
        n_links += 1
    handles = [
        Line2D([], [], marker="o", linestyle="", color=MESSENGER_COLORS.get(m, "#7f7f7f"), label=m)
        for m in sorted(seen_messengers)
    ]
    handles.append(Line2D([], [], color="#555555", linestyle="--", label="Galactic plane"))
    if n_contours:
        handles.append(Line2D([], [], color="#333333", label="sky map 90 % (50 % dotted)"))
    if n_links:
        handles.append(Line2D([], [], color="#000000", linewidth=1.6, label="coincidence"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.22), ncol=min(len(handles), 6),
              fontsize=8, frameon=False)
    ax.set_title(title or "Recent alerts (equatorial, Mollweide)", fontsize=11, pad=14)
    return fig, SkyMapSummary(n_points, n_circles, n_contours, n_links)


def gnomonic(ra0: float, dec0: float, ra: npt.ArrayLike, dec: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Standard coordinates (deg) of positions around the tangent point (``ra0``, ``dec0``) deg.

    ``xi`` grows to the east, ``eta`` to the north; positions more than 90 deg
    away get NaN.
    """
    a0, d0 = np.radians(ra0), np.radians(dec0)
    a, d = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(d) * np.sin(a - a0) / cos_c
        eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    bad = cos_c <= 0
    return np.where(bad, np.nan, np.degrees(xi)), np.where(bad, np.nan, np.degrees(eta))


def inverse_gnomonic(ra0: float, dec0: float, xi: FloatArray, eta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """RA, Dec (deg) of standard coordinates ``xi``, ``eta`` (deg) around (``ra0``, ``dec0``) deg."""
    x, y = np.radians(xi), np.radians(eta)
    d0 = np.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0.0))
        ra = np.radians(ra0) + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def localization_extent(alert: Alert) -> float:
    """Half-width (deg) of a zoomed view that holds the alert's 90 % region."""
    r = alert.region
    if alert.skymap is None and isinstance(r, Circle):
        scale = 1.0
        if r.containment is not None and 0.0 < r.containment < 0.9:
            from broker.model import gaussian_radius_scale

            scale = gaussian_radius_scale(r.containment)
        return float(max(1.6 * r.radius * scale, 0.02))
    if alert.skymap is None and isinstance(r, Ellipse):
        return float(max(1.6 * r.semi_major, 0.02))
    if alert.skymap is None and isinstance(r, Rectangle) and r.corners:
        sep = [hp.rotator.angdist([r.ra, r.dec], [c[0], c[1]], lonlat=True)[0] for c in r.corners]
        return float(max(1.3 * np.degrees(max(sep)), 0.02))
    if alert.skymap is not None:
        pos = alert.skymap.max_position()
        levels = credible_levels(alert.skymap)
        inside = levels <= 0.9
        theta, phi = hp.pix2ang(1 << alert.skymap.order[inside], alert.skymap.ipix[inside], nest=True)
        vecs = hp.ang2vec(theta, phi)
        v0 = hp.ang2vec(pos[0], pos[1], lonlat=True)
        far = float(np.degrees(np.arccos(np.clip(vecs @ v0, -1.0, 1.0))).max()) if vecs.size else 1.0
        return float(min(max(1.15 * far, 0.5), 60.0))
    return 1.0


def localization_figure(alert: Alert, npix: int = 400) -> Figure | None:
    """Zoomed localization of one alert: credible regions or error region, and its matched catalog sources.

    Gnomonic projection centred on the best position, east (RA) to the left,
    offsets in deg.  None when the alert has no localization.
    """
    center = alert.position
    if center is None:
        return None
    ra0, dec0 = center
    half = localization_extent(alert)
    fig = Figure(figsize=(7.0, 6.2))
    ax = fig.add_subplot(111)
    handles: list[Line2D] = []
    color = MESSENGER_COLORS.get(alert.messenger, MESSENGER_COLORS["unknown"])
    g = np.linspace(-half, half, npix)
    xi, eta = np.meshgrid(g, g)
    gra, gdec = inverse_gnomonic(ra0, dec0, xi, eta)
    found = alert_contours(alert, gra, gdec) if alert.skymap is not None else None
    if alert.skymap is not None:
        lv = skymap_levels_at(alert.skymap, gra, gdec)
        ax.contourf(xi, eta, lv, levels=[0.0, 0.5, 0.9], colors=["#9d6fd6", "#d8c6f0"], alpha=0.9)
    if found is not None:
        for level, mask in sorted(found.levels.items()):
            if mask.any():
                ax.contour(xi, eta, mask.astype(np.float64), levels=[0.5], colors=[color],
                           linestyles="solid" if level >= 0.9 else "dashed", linewidths=1.4)
                handles.append(Line2D([], [], color=color, linestyle="solid" if level >= 0.9 else "dashed",
                                      label=f"{level:.0%} credible region"))
    elif alert.region is not None:
        outline = region_outline(alert.region)
        if outline is not None:
            x, y = gnomonic(ra0, dec0, *outline)
            ax.plot(x, y, color=color, linewidth=1.6)
            cont = getattr(alert.region, "containment", None)
            label = "error region" + (f" ({cont:.0%})" if cont else "")
            handles.append(Line2D([], [], color=color, label=label))
    ax.plot(0.0, 0.0, marker="+", color="black", markersize=12, mew=1.5)
    handles.append(Line2D([], [], marker="+", linestyle="", color="black", label="best position"))
    matches = [m for ann in alert.annotations if ann.status == "ok" for m in ann.matches]
    markers = "osD^v<>ph*"
    for i, cat in enumerate(sorted({m.catalog for m in matches})):
        ms = [m for m in matches if m.catalog == cat]
        x, y = gnomonic(ra0, dec0, [m.ra for m in ms], [m.dec for m in ms])
        ax.scatter(x, y, marker=markers[i % len(markers)], s=28, facecolors="none", edgecolors=f"C{i}", zorder=4)
        handles.append(Line2D([], [], marker=markers[i % len(markers)], linestyle="", markerfacecolor="none",
                              color=f"C{i}", label=f"{cat} ({len(ms)})"))
    ax.set_xlim(half, -half)  # east to the left
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.grid(True, color="#dddddd", linewidth=0.5)
    ax.set_xlabel("ΔRA cos Dec (deg, east to the left)")
    ax.set_ylabel("ΔDec (deg)")
    ax.set_title(f"{alert.event_name or alert.event_id}: centred on RA {ra0:.3f}°, Dec {dec0:+.3f}° (ICRS)",
                 fontsize=10)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def skymap_allsky_figure(alert: Alert) -> Figure | None:
    """All-sky Mollweide view of one alert's sky map: 50 % and 90 % credible regions and matched galaxies."""
    if alert.skymap is None and alert.annotation("skymap") is None:
        return None
    fig = Figure(figsize=(9, 5.2))
    ax = _allsky_axes(fig)
    xx, yy, gra, gdec = allsky_grid()
    color = MESSENGER_COLORS.get(alert.messenger, MESSENGER_COLORS["unknown"])
    if alert.skymap is not None:
        lv = skymap_levels_at(alert.skymap, gra, gdec)
        ax.contourf(xx, yy, lv, levels=[0.0, 0.5, 0.9], colors=["#9d6fd6", "#d8c6f0"], alpha=0.9)
    found = alert_contours(alert, gra, gdec)
    if found is not None:
        for level, mask in found.levels.items():
            _contour(ax, xx, yy, mask, color, linewidths=1.0, linestyles="solid" if level >= 0.9 else "dashed")
    ann = alert.annotation("skymap")
    if ann is not None and ann.matches:
        ax.scatter(mollweide_x([m.ra for m in ann.matches]), np.radians([m.dec for m in ann.matches]),
                   s=10, color="black", zorder=4, label="ranked galaxies")
    ax.set_title(f"{alert.event_name or alert.event_id}: sky map (50 % dark, 90 % light)", fontsize=10, pad=12)
    return fig


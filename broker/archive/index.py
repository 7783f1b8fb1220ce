# SPDX-License-Identifier: Apache-2.0
"""What every archive backend indexes about an alert, computed once, the same way.

Both backends store the values of :func:`indexed` and answer a cone search
with :func:`cone_ranges` (HEALPix nested pixel ranges at :data:`HPX_ORDER`,
which select candidates through an index) followed by the exact cut of
:class:`Cone` (a dot product of unit vectors against the cosine of the
radius, evaluated identically in SQL and in numpy), so the same query gives
the same alerts in every backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import healpy as hp
import numpy as np
import numpy.typing as npt

from broker.archive import HPX_ORDER
from broker.archive.query import CORE_PROPERTIES, to_us
from broker.model import Alert, Circle, Ellipse
from broker.sky import angular_separation

CONE_DRIVE_MAX_DEG = 20.0
"""Cones up to this radius (deg) are answered from the pixel index; larger ones filter a time-ordered scan."""

MAX_RANGES = 256
"""Most pixel ranges a cone search asks for (Elasticsearch's boolean clause limit is 1024)."""


@dataclass(frozen=True)
class Indexed:
    """The searchable values of one archived alert.

    Parameters
    ----------
    t_us
        Sort and time-filter key: event time, else issue time, else ingestion
        time, in microseconds since 1970 UTC.
    ingested_us
        When the archive received it (µs since 1970 UTC); alerts of one batch
        get consecutive microseconds in batch order, so arrival order breaks ties.
    ra, dec
        Best position (deg), or None.
    xyz
        Unit vector of the position (ICRS, x towards RA 0), or None.
    hpx
        Nested HEALPix pixel at :data:`HPX_ORDER` of the position, or None.
    error_radius
        Circle radius or ellipse semi-major axis (deg), or None.
    properties
        Numeric properties for range queries: ``far``, ``error_radius``,
        ``revision``, the numeric (non-boolean, finite) values of
        ``Alert.properties`` and ``classification.<class>`` probabilities.
    search_text
        Lower-cased event id, event name, broker id, mission and upstream ids
        (free-text search is a substring match on any of them).
    mission_keys
        Lower-cased mission and instrument (the mission filter).
    n_matches
        Number of catalog matches over all annotations.
    """

    t_us: int
    ingested_us: int
    ra: float | None
    dec: float | None
    xyz: tuple[float, float, float] | None
    hpx: int | None
    error_radius: float | None
    properties: dict[str, float]
    search_text: tuple[str, ...]
    mission_keys: tuple[str, ...]
    n_matches: int


def error_radius(alert: Alert) -> float | None:
    """Circle radius or ellipse semi-major axis (deg), None for other localizations."""
    r = alert.region
    if isinstance(r, Circle):
        return r.radius
    if isinstance(r, Ellipse):
        return r.semi_major
    return None


def unit_vectors(ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Unit vectors (N, 3) of positions in deg."""
    r = np.radians(np.asarray(ra, dtype=np.float64))
    d = np.radians(np.asarray(dec, dtype=np.float64))
    cd = np.cos(d)
    return np.stack([cd * np.cos(r), cd * np.sin(r), np.sin(d)], axis=-1)


def numeric_properties(alert: Alert) -> dict[str, float]:
    """The values property ranges are matched against (see :class:`Indexed`)."""
    out: dict[str, float] = {}
    for k, v in alert.properties.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    for k, p in alert.classification.items():
        if math.isfinite(p):
            out[f"classification.{k}"] = float(p)
    core: dict[str, float | None] = {
        "far": alert.far,
        "error_radius": error_radius(alert),
        "revision": None if alert.revision is None else float(alert.revision),
    }
    for k in CORE_PROPERTIES:
        c = core[k]
        out.pop(k, None)  # the core meaning wins over an upstream property of the same name
        if c is not None and math.isfinite(c):
            out[k] = c
    return out


def search_text(alert: Alert) -> tuple[str, ...]:
    """Lower-cased identifiers matched by free-text search (de-duplicated, in order)."""
    vals = [alert.event_id, alert.event_name, alert.broker_id, alert.mission, *alert.upstream_ids]
    return tuple(dict.fromkeys(v.lower() for v in vals if v))


def indexed(alerts: Sequence[Alert], batch_us: int) -> list[Indexed]:
    """The searchable values of a batch (positions vectorised); ``batch_us`` is the ingestion time, µs."""
    positions = [a.position for a in alerts]
    known = [k for k, p in enumerate(positions) if p is not None]
    pix: dict[int, int] = {}
    vec: dict[int, tuple[float, float, float]] = {}
    if known:
        ra = np.array([positions[k][0] for k in known])  # type: ignore[index]
        dec = np.array([positions[k][1] for k in known])  # type: ignore[index]
        p = np.atleast_1d(hp.ang2pix(1 << HPX_ORDER, ra, dec, nest=True, lonlat=True))
        v = unit_vectors(ra, dec)
        for j, k in enumerate(known):
            pix[k] = int(p[j])
            vec[k] = (float(v[j, 0]), float(v[j, 1]), float(v[j, 2]))
    out = []
    for k, a in enumerate(alerts):
        ingested_us = batch_us + k
        t = to_us(a.event_time)
        if t is None:
            t = to_us(a.issued)
        pos = positions[k]
        mission_keys = tuple(dict.fromkeys(x.lower() for x in (a.mission, a.instrument) if x))
        out.append(Indexed(
            t_us=ingested_us if t is None else t,
            ingested_us=ingested_us,
            ra=None if pos is None else float(pos[0]),
            dec=None if pos is None else float(pos[1]),
            xyz=vec.get(k),
            hpx=pix.get(k),
            error_radius=error_radius(a),
            properties=numeric_properties(a),
            search_text=search_text(a),
            mission_keys=mission_keys,
            n_matches=sum(len(an.matches) for an in a.annotations),
        ))
    return out


@dataclass(frozen=True)
class Cone:
    """The exact cut of a cone search: ``x*cx + y*cy + z*cz >= cos_radius``.

    Parameters
    ----------
    ra, dec, radius
        Centre and radius, deg.
    """

    ra: float
    dec: float
    radius: float

    @property
    def centre(self) -> tuple[float, float, float]:
        """Unit vector of the centre."""
        v = unit_vectors(self.ra, self.dec)
        return float(v[0]), float(v[1]), float(v[2])

    @property
    def cos_radius(self) -> float:
        """cos(radius)."""
        return math.cos(math.radians(self.radius))

    def contains(self, xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which unit vectors (N, 3) are inside (the same arithmetic as the SQL expression)."""
        cx, cy, cz = self.centre
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        dot = xyz[:, 0] * cx + xyz[:, 1] * cy + xyz[:, 2] * cz
        return np.asarray(dot >= self.cos_radius)

    def separation(self, ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Angular distance (deg) of positions (deg) from the centre (Vincenty's formula, stable at 0 and 180)."""
        return angular_separation(self.ra, self.dec, ra, dec)


def cone_ranges(ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    """Half-open ranges ``[lo, hi)`` of nested pixels at :data:`HPX_ORDER` covering the cone.

    The disc is covered at the finest order whose pixels are at least an
    eighth of the radius (so about 200 pixels), coarsened until contiguous
    pixels merge into at most :data:`MAX_RANGES` ranges.  ``inclusive``
    covering never misses a pixel that touches the disc; the exact cut
    removes the extra candidates.
    """
    vec = hp.ang2vec(ra, dec, lonlat=True)
    want = math.radians(radius) / 8.0
    order = 0
    while order < HPX_ORDER and hp.nside2resol(1 << (order + 1)) >= want:
        order += 1
    while True:
        pix = np.sort(np.asarray(hp.query_disc(1 << order, vec, math.radians(radius), inclusive=True, nest=True),
                                 dtype=np.int64))
        if pix.size == 0:
            return []
        breaks = np.flatnonzero(np.diff(pix) != 1)
        starts = np.concatenate([[pix[0]], pix[breaks + 1]])
        ends = np.concatenate([pix[breaks], [pix[-1]]]) + 1
        if starts.size <= MAX_RANGES or order == 0:
            break
        order -= 1
    shift = 2 * (HPX_ORDER - order)
    return [(int(s) << shift, int(e) << shift) for s, e in zip(starts, ends, strict=True)]


def rank(revision: int | None, issued_us: int | None, ingested_us: int, broker_id: str) -> tuple[int, int, int, str]:
    """Order of the versions of one event: (revision, issue time, arrival), broker id last."""
    return (-1 if revision is None else revision, -1 if issued_us is None else issued_us, ingested_us, broker_id)

# SPDX-License-Identifier: Apache-2.0
"""Localization footprints and the spatial tests of the coincidence search.

A :class:`Footprint` is the compact summary of an alert's localization that
the shared recent-alert window stores (:meth:`Footprint.to_bytes`); the
functions :func:`compare` and :func:`compare_many` run the spatial test of a
pair and compute RAVEN's sky-map overlap integral (Ashton et al. 2018, ApJ 860,
6, eq. 5; ligo-raven ``search.skymap_overlap_integral``)::

    I_Omega = 4 pi * integral p_a(Omega) p_b(Omega) dOmega

with both densities normalized on the sphere (sr^-1): 1 for two uniform maps,
larger when the localizations agree, near 0 when they exclude each other.  It
divides the temporal joint false-alarm rate (:mod:`broker.coincidence.far`).

Footprints
----------
``point``
    A best position without error (``broker.model.Point``).
``circle``, ``ellipse``
    The region scaled to 90 % containment with
    :func:`broker.model.gaussian_radius_scale` (a circular 2-D Gaussian; for an
    ellipse both axes get the factor).  A region without stated containment
    (or with a containment of 1) is taken as the 90 % region as it is.
``rectangle``
    A quadrilateral (MAXI GSC) is approximated by its circumscribed circle
    about the stated centre, scaled like a circle; it then behaves as a circle
    everywhere.  This overstates the area of long thin boxes (MAXI's are about
    3 x 0.4 deg), never misses a coincidence.
``skymap``
    A sparse map: the alert's multi-order map re-binned to one HEALPix nested
    order (:data:`DEFAULT_ORDER` = 8, pixels of 0.23 deg, 0.052 deg^2, unless
    the map itself is coarser: a flat NSIDE = 8 Fermi GBM map stays at order
    3, upsampling adds no information), keeping the most probable pixels that
    hold :data:`DEFAULT_KEEP` (99.9 %) of the probability, renormalized to 1.
    Order 8 is ten times finer than the width of the best GW localizations
    (90 % areas of 10-30 deg^2 are 200-600 pixels) and than the GBM systematic
    error, so the overlap integral changes by about 1 % against the native
    resolution (see the tests), while a 30 deg^2 map needs 3000 pixels (27 kB).
    Broad maps would need up to 786 432 pixels at order 8: the order is
    lowered until the kept pixels number at most :data:`DEFAULT_MAX_PIXELS`
    (a 3800 deg^2 BAYESTAR map goes to order 7, a 9000 deg^2 Swift BAT-GUANO
    map to order 6); structure finer than a degree does not matter for maps
    that broad, except for the overlap of two sharply peaked ones (the
    BAT-GUANO map's 0.1 deg^2 peak holds 5 % of its probability: its
    self-overlap drops from 1230 to 71, its overlap with a GW map by 7 %).
    The 90 % credible region is the smallest set of pixels of
    that order, by decreasing density, holding at least 90 % of the
    probability (the pixel that crosses 90 % included, so it is never empty):
    the pixels whose probability is at least :attr:`Footprint.threshold`.  It
    is also stored at the coarse :data:`REGION_ORDER` (6, 0.84 deg^2 pixels)
    for fast rejection.

The best position of a footprint is :attr:`broker.model.Alert.position` (the
region centre, else the peak of the map) and ``extent`` the radius (deg) about
it that holds the whole kept localization: the 90 % radius (semi-major axis)
of a region, 0 for a point, the farthest kept pixel of a map (centre distance
plus the largest pixel radius); ``None`` when there is no localization or it
reaches the whole sky.

Spatial tests
-------------
``skymap-overlap`` (two sky maps)
    Coincident iff the two 90 % regions share a pixel at the finer of the two
    orders.  Overlap: the integral over the sparse maps at that order, exact
    for piecewise-constant maps (a coarse pixel's probability is split evenly
    among its children).  RAVEN instead takes, for every pixel of the first
    map, the density of the second map's pixel with the nearest centre; both
    agree within the re-binning error (tests: 1 % for the self-overlap of
    BAYESTAR maps, 3 % for copies shifted by 0.5-60 deg and for the GBM map,
    0.01 absolute for overlaps made in the maps' 0.1 % tails).
``skymap-point`` (a sky map and a point or region)
    A point: coincident iff it lies in a pixel of the 90 % region; overlap
    ``4 pi p(pixel) / A(pixel)``, RAVEN's point formula (4 pi times the
    normalized density at the point), with the density averaged over the
    footprint's pixel (BAYESTAR maps refined to order 11 vary by up to 45 %
    within an order-8 pixel; median 5 %).  A circle (or rectangle): coincident iff
    a 90 % pixel lies within the circle (pixel centre within the radius plus
    the pixel radius: exact to one pixel); overlap: the map integrated against
    the circle taken as a Fisher-von Mises density with the same 90 % radius
    (the spherical Gaussian), numerically, on HEALPix pixels no larger than
    a quarter of its width (and no larger than the map's), out to 5 widths
    (the density is truncated there; 4e-6 of its mass), with a Richardson
    extrapolation of the midpoint sums (0.05 % against a brute-force sum).
    As the circle shrinks the integral tends to the point formula, as it
    must.  An ellipse: the same with a 2-D Gaussian in
    the ellipse's azimuthal-equidistant plane (90 % axes), and the 90 % test
    against the ellipse enlarged by one pixel radius.
``region-overlap`` (two circles or ellipses)
    Circles: coincident iff the centres are closer than the sum of the 90 %
    radii; overlap, exact on the sphere for two Fisher-von Mises densities
    ``f(x) = C(k) exp(k mu.x)``, ``C(k) = k / (4 pi sinh k)``::

        4 pi * integral f1 f2 dOmega = 4 pi C(k1) C(k2) / C(|k1 mu1 + k2 mu2|)

    evaluated in a cancellation-free log form; the concentration ``k`` of each
    is the one that puts 90 % of the probability inside the 90 % radius
    (:func:`fisher_kappa`).  With an ellipse: coincident iff the 90 % ellipses
    intersect (tested on 72 points of each boundary and the centres); overlap
    of two 2-D Gaussians in the azimuthal-equidistant plane about the
    midpoint of the centres, ``4 pi N(d; 0, S1 + S2)`` (a circle is a
    Gaussian with the same 90 % radius).
``point-in-region`` (a point and a circle or ellipse)
    Coincident iff the point is inside the 90 % region; overlap 4 pi times the
    region's density at the point (the point formula again).
``point-point`` (two points without errors)
    Coincident iff they are at most :data:`POINT_MATCH_RADIUS` (1 deg) apart,
    the largest statistical error of the positions given without one (GRB
    and neutrino positions quoted to 0.01-1 deg); no overlap (None).
``none`` (either side has no localization)
    Coincident, overlap None: the pair is coincident in time only, as RAVEN
    does when a sky map is missing.

``separation`` is the angle between the two best positions (deg), whenever
both exist.  The overlap is computed for every pair, coincident or not
(``0.0`` for two maps whose kept pixels, or a map and a region whose 5-width
discs, do not meet), so a rule that pairs on time alone still records it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

import healpy as hp
import numpy as np
import numpy.typing as npt

from broker.model import Alert, Circle, Ellipse, Point, Rectangle, Region, SkyMap, gaussian_radius_scale
from broker.sky import angular_separation

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_ORDER",
    "FORMAT_VERSION",
    "POINT_MATCH_RADIUS",
    "REGION_LEVEL",
    "REGION_ORDER",
    "Footprint",
    "FootprintKind",
    "SpatialResult",
    "SpatialTest",
    "compare",
    "compare_many",
    "fisher_kappa",
    "footprint",
    "overlap_integral",
    "region_footprint",
    "separation",
    "skymap_footprint",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

FootprintKind = Literal["none", "point", "circle", "ellipse", "rectangle", "skymap"]
SpatialTest = Literal["skymap-overlap", "skymap-point", "region-overlap", "point-in-region", "point-point", "none"]

DEFAULT_ORDER = 8
"""HEALPix order sky maps are re-binned to (NSIDE 256, 0.23 deg pixels)."""
DEFAULT_KEEP = 0.999
"""Probability content of the pixels a sky-map footprint keeps."""
DEFAULT_MAX_PIXELS = 32768
"""Most pixels a sky-map footprint keeps; broader maps get a coarser order."""
REGION_ORDER = 6
"""Order of the coarse copy of a sky map's 90 % region (0.84 deg^2 pixels)."""
REGION_LEVEL = 0.9
"""Containment of the regions the coincidence tests intersect."""
POINT_MATCH_RADIUS = 1.0
"""Largest separation (deg) of two coincident points without errors."""
FORMAT_VERSION = 1
"""Version byte of :meth:`Footprint.to_bytes`."""

_MAX_ORDER = 13  # pixel ids of order <= 13 fit in uint32 (12 * 4**13 < 2**32)
_GAUSS_WIDTHS = 5.0  # region densities are integrated (truncated) out to 5 widths
_GAUSS_PIXEL = 0.25  # integration pixels at most a quarter of the width
_GAUSS_MAX_PIXELS = 1 << 16
_K90 = math.sqrt(-2.0 * math.log1p(-REGION_LEVEL))  # 90 % Mahalanobis radius of a 2-D Gaussian, 2.146
_BOUNDARY_POINTS = 72
_SQRT_PI_3 = math.sqrt(math.pi / 3.0)  # side (rad) of an order-0 pixel: pixel side at order o is this / 2**o
_SUPPORT_ORDER = 4  # kept pixels of two maps are first compared at order <= 4 (3.4 deg^2 pixels)
_DENSE_COST = 6.0  # a dense lookup table pays off once the needles outnumber its pixels / this

_KIND_CODE: dict[str, int] = {"none": 0, "point": 1, "circle": 2, "ellipse": 3, "rectangle": 4, "skymap": 5}
_CODE_KIND: tuple[FootprintKind, ...] = ("none", "point", "circle", "ellipse", "rectangle", "skymap")
_NONE, _POINT, _CIRCLE, _ELLIPSE, _RECT, _MAP = range(6)

_HEAD = struct.Struct("<BB")
_SHAPE = {_POINT: struct.Struct("<dd"), _CIRCLE: struct.Struct("<ddd"), _RECT: struct.Struct("<ddd"),
          _ELLIPSE: struct.Struct("<ddddd")}
_MAP_HEAD = struct.Struct("<dddBBdII")
_ROW = struct.Struct("<7d")


def _empty_int() -> IntArray:
    return np.empty(0, dtype=np.int64)


def _empty_float() -> FloatArray:
    return np.empty(0, dtype=np.float64)


# --------------------------------------------------------------------------- spherical geometry


def _unit(ra_deg: npt.ArrayLike, dec_deg: npt.ArrayLike) -> FloatArray:
    """Unit vectors (..., 3) of positions in deg."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cd = np.cos(dec)
    return np.stack((cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)), axis=-1)


def _dot3(vec: FloatArray, v: FloatArray) -> FloatArray:
    """Dot products of rows of ``vec`` (n, 3) with ``v`` (3,).

    Written out rather than ``vec @ v``: a multithreaded BLAS (OpenBLAS) makes
    matrix products of a few thousand rows 100 x slower on a loaded machine.
    """
    return np.asarray(vec[:, 0] * v[0] + vec[:, 1] * v[1] + vec[:, 2] * v[2], dtype=np.float64)


separation = angular_separation
"""Angular distance (deg) between positions (deg), broadcast (:func:`broker.sky.angular_separation`)."""


def _bearing(ra1: npt.ArrayLike, dec1: npt.ArrayLike, ra2: npt.ArrayLike, dec2: npt.ArrayLike) -> FloatArray:
    """Position angle (rad, east of north) of position 2 seen from position 1 (deg in)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    dra = r2 - r1
    return np.asarray(
        np.arctan2(np.sin(dra) * np.cos(d2), np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(dra)),
        dtype=np.float64,
    )


def _destination(
    ra_deg: npt.ArrayLike, dec_deg: npt.ArrayLike, dist_rad: npt.ArrayLike, bearing_rad: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Position (deg) reached from (ra, dec) along a great circle of given length and bearing."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    d = np.asarray(dist_rad, dtype=np.float64)
    b = np.asarray(bearing_rad, dtype=np.float64)
    sin_dec2 = np.sin(dec) * np.cos(d) + np.cos(dec) * np.sin(d) * np.cos(b)
    dec2 = np.arcsin(np.clip(sin_dec2, -1.0, 1.0))
    ra2 = ra + np.arctan2(np.sin(b) * np.sin(d) * np.cos(dec), np.cos(d) - np.sin(dec) * sin_dec2)
    return np.degrees(ra2) % 360.0, np.degrees(dec2)


def _in_ellipse(
    ra0: npt.ArrayLike, dec0: npt.ArrayLike, a_deg: npt.ArrayLike, b_deg: npt.ArrayLike, pa_deg: npt.ArrayLike,
    ra: npt.ArrayLike, dec: npt.ArrayLike,
) -> BoolArray:
    """Whether positions lie inside ellipses (deg; axes measured along great circles from the centre)."""
    theta = np.radians(separation(ra0, dec0, ra, dec))
    phi = _bearing(ra0, dec0, ra, dec) - np.radians(np.asarray(pa_deg, dtype=np.float64))
    a = np.radians(np.asarray(a_deg, dtype=np.float64))
    b = np.radians(np.asarray(b_deg, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.square(theta * np.cos(phi) / a) + np.square(theta * np.sin(phi) / b)
    return np.asarray((q <= 1.0) | (theta == 0.0), dtype=np.bool_)


def _ellipse_boundary(
    ra0: FloatArray, dec0: FloatArray, a_deg: FloatArray, b_deg: FloatArray, pa_deg: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Points (K, N) on the boundaries of K ellipses (deg in, deg out)."""
    t = np.linspace(0.0, 2.0 * np.pi, _BOUNDARY_POINTS, endpoint=False)
    m1 = np.radians(a_deg)[:, None] * np.cos(t)
    m2 = np.radians(b_deg)[:, None] * np.sin(t)
    pa = np.radians(pa_deg)[:, None]
    east = m1 * np.sin(pa) + m2 * np.cos(pa)
    north = m1 * np.cos(pa) - m2 * np.sin(pa)
    return _destination(ra0[:, None], dec0[:, None], np.hypot(east, north), np.arctan2(east, north))


# --------------------------------------------------------------------------- Fisher-von Mises densities


def fisher_kappa(radius90_deg: npt.ArrayLike) -> FloatArray:
    """Concentration of the Fisher-von Mises density holding 90 % inside ``radius90_deg``.

    The probability within angle ``r`` of the mean direction is
    ``(1 - exp(-2 k s)) / (1 - exp(-2 k))`` with ``s = sin^2(r / 2)``;
    ``k = ln 10 / (2 s)`` solves it to machine precision once ``k > 20``
    (radii below 28 deg), broader ones are solved by bisection.  Radii beyond
    143.13 deg, which even the uniform density fills to 90 %, get ``k = 0``.

    Parameters
    ----------
    radius90_deg
        90 % radii, deg.

    Returns
    -------
    numpy.ndarray
        Concentrations (rad^-2, dimensionless on the unit sphere), >= 0.

    Examples
    --------
    >>> round(float(fisher_kappa(1.0)) * math.radians(1.0) ** 2, 3)  # 2 ln 10 = 4.605 for small radii
    4.605
    """
    r = np.radians(np.asarray(radius90_deg, dtype=np.float64))
    s = np.square(np.sin(np.minimum(r, np.pi) / 2.0))
    with np.errstate(divide="ignore"):
        kappa = np.asarray(np.log(10.0) / (2.0 * s), dtype=np.float64)
    broad = (kappa <= 20.0) & (s < REGION_LEVEL)
    kappa = np.where(s >= REGION_LEVEL, 0.0, kappa)
    if np.any(broad):
        sb = np.broadcast_to(s, kappa.shape)[broad]
        # window candidates repeat a few radii: solve each distinct one once per process
        values, inverse = np.unique(sb, return_inverse=True)
        missing = [v for v in values.tolist() if v not in _KAPPA_CACHE]
        if missing:
            sm = np.array(missing)
            lo = np.full(sm.shape, -20.0)
            hi = np.full(sm.shape, math.log(21.0))
            for _ in range(64):  # bisection on ln k: the containment grows with k
                mid = 0.5 * (lo + hi)
                k = np.exp(mid)
                p = np.expm1(-2.0 * k * sm) / np.expm1(-2.0 * k)
                lo = np.where(p < REGION_LEVEL, mid, lo)
                hi = np.where(p < REGION_LEVEL, hi, mid)
            if len(_KAPPA_CACHE) > _KAPPA_CACHE_MAX:
                _KAPPA_CACHE.clear()
            _KAPPA_CACHE.update(zip(missing, np.exp(0.5 * (lo + hi)).tolist(), strict=True))
        solved = np.array([_KAPPA_CACHE[v] for v in values.tolist()])
        kappa = kappa.copy()
        kappa[broad] = solved[inverse.ravel()]
    return kappa


_KAPPA_CACHE: dict[float, float] = {}
_KAPPA_CACHE_MAX = 100_000


def _log_norm(kappa: FloatArray) -> FloatArray:
    """``ln(2 k / (1 - exp(-2 k)))`` = ``ln(4 pi C(k)) + k``, stable for all k >= 0 (0 at k = 0)."""
    k = np.maximum(kappa, 1e-300)
    return np.asarray(np.log(2.0 * k / -np.expm1(-2.0 * k)), dtype=np.float64)


def _fisher_overlap(k1: FloatArray, k2: FloatArray, sep_rad: FloatArray) -> FloatArray:
    """``4 pi * integral f1 f2`` of two Fisher-von Mises densities (exact, log form)."""
    s2 = np.square(np.sin(sep_rad / 2.0))
    k3 = np.sqrt(np.maximum(np.square(k1 + k2) - 4.0 * k1 * k2 * s2, 0.0))
    total = k1 + k2 + k3
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(total > 0, 4.0 * k1 * k2 * s2 / total, 0.0)  # k1 + k2 - k3 without cancellation
    return np.asarray(np.exp(_log_norm(k1) + _log_norm(k2) - _log_norm(k3) - excess), dtype=np.float64)


def _fisher_density(kappa: FloatArray, sep_rad: FloatArray) -> FloatArray:
    """4 pi times the Fisher-von Mises density at angle ``sep_rad`` from its mean."""
    return np.asarray(np.exp(_log_norm(kappa) - 2.0 * kappa * np.square(np.sin(sep_rad / 2.0))), dtype=np.float64)


# --------------------------------------------------------------------------- footprints


@dataclass(frozen=True, eq=False)
class Footprint:
    """The compact summary of one alert's localization kept in the recent-alert window.

    Parameters
    ----------
    kind
        ``none``, ``point``, ``circle``, ``ellipse``, ``rectangle`` or ``skymap``.
    ra, dec
        Best position, deg (None only for ``none``).
    radius
        90 % radius (circle; rectangle: of its circumscribed circle) or 90 %
        semi-major axis (ellipse), deg.
    semi_minor
        90 % semi-minor axis of an ellipse, deg.
    position_angle
        Position angle of an ellipse's major axis, deg east of north.
    extent
        Radius (deg) about (ra, dec) holding the whole kept localization; None
        when there is none or it reaches the whole sky.
    order
        HEALPix order of a sky map's pixels.
    ipix
        Nested pixel ids of a sky map's kept pixels at ``order``, sorted, int64.
    prob
        Probability of each kept pixel (sums to 1), float64.
    threshold
        Probability of the least probable pixel of the 90 % credible region:
        the region is ``prob >= threshold``.
    region_order
        Order of ``region``, ``min(REGION_ORDER, order)``.
    region
        The 90 % credible region at ``region_order``: sorted pixel ids (int64)
        of every pixel that holds part of it.
    """

    kind: FootprintKind
    ra: float | None = None
    dec: float | None = None
    radius: float | None = None
    semi_minor: float | None = None
    position_angle: float | None = None
    extent: float | None = None
    order: int | None = None
    ipix: IntArray = field(default_factory=_empty_int)
    prob: FloatArray = field(default_factory=_empty_float)
    threshold: float | None = None
    region_order: int | None = None
    region: IntArray = field(default_factory=_empty_int)

    def __post_init__(self) -> None:
        if self.kind not in _KIND_CODE:
            raise ValueError(f"unknown footprint kind {self.kind!r}")
        if self.kind == "skymap" and (self.order is None or not 0 <= self.order <= _MAX_ORDER):
            raise ValueError(f"sky-map footprint order {self.order!r} is not in [0, {_MAX_ORDER}]")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Footprint):
            return NotImplemented
        return (
            (self.kind, self.ra, self.dec, self.radius, self.semi_minor, self.position_angle, self.extent,
             self.order, self.threshold, self.region_order)
            == (other.kind, other.ra, other.dec, other.radius, other.semi_minor, other.position_angle,
                other.extent, other.order, other.threshold, other.region_order)
            and np.array_equal(self.ipix, other.ipix)
            and np.array_equal(self.prob, other.prob)
            and np.array_equal(self.region, other.region)
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ serialization
    def to_bytes(self) -> bytes:
        """Serialize (version :data:`FORMAT_VERSION`, little-endian); :meth:`from_bytes` gives it back exactly.

        Layout: version and kind bytes (uint8), then per kind ``none``:
        nothing; ``point``: ra, dec; ``circle``/``rectangle``: ra, dec,
        radius; ``ellipse``: ra, dec, radius, semi_minor, position_angle (all
        float64; a region's extent is its radius, 0 for a point, and is not
        stored); ``skymap``: ra, dec, extent (NaN for None) (float64), order,
        region order (uint8), threshold (float64), the number of runs of
        consecutive pixel ids and of region pixels (uint32), the runs' first
        ids and lengths (uint32), the probabilities (float64) and the region
        pixel ids (uint32).  A point is 18 bytes, a circle 26, an ellipse 42,
        a 30 deg^2 GW map 27 kB, a 1300 deg^2 one 150 kB, a Fermi GBM map 4 kB.
        """
        code = _KIND_CODE[self.kind]
        head = _HEAD.pack(FORMAT_VERSION, code)
        if code == _NONE:
            return head
        if code == _POINT:
            return head + _SHAPE[code].pack(self.ra, self.dec)
        if code in (_CIRCLE, _RECT):
            return head + _SHAPE[code].pack(self.ra, self.dec, self.radius)
        if code == _ELLIPSE:
            return head + _SHAPE[code].pack(self.ra, self.dec, self.radius, self.semi_minor, self.position_angle)
        ipix = self.ipix
        breaks = np.flatnonzero(np.diff(ipix) != 1) + 1
        starts = np.concatenate(([0], breaks)).astype(np.int64)
        lengths = np.diff(np.concatenate((starts, [ipix.size])))
        extent = math.nan if self.extent is None else self.extent
        return b"".join((
            head,
            _MAP_HEAD.pack(self.ra, self.dec, extent, self.order, self.region_order, self.threshold,
                           starts.size, self.region.size),
            ipix[starts].astype("<u4").tobytes(),
            lengths.astype("<u4").tobytes(),
            self.prob.astype("<f8").tobytes(),
            self.region.astype("<u4").tobytes(),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> Footprint:
        """Decode :meth:`to_bytes` output.

        Raises
        ------
        ValueError
            Unknown version or kind, or truncated or overlong data.
        """
        if len(data) < _HEAD.size:
            raise ValueError(f"footprint of {len(data)} bytes is truncated")
        version, code = _HEAD.unpack_from(data)
        if version != FORMAT_VERSION:
            raise ValueError(f"footprint format version {version} is not {FORMAT_VERSION}")
        if code >= len(_CODE_KIND):
            raise ValueError(f"unknown footprint kind code {code}")
        kind = _CODE_KIND[code]
        body = memoryview(data)[_HEAD.size:]
        if code == _NONE:
            _check_size(body, 0)
            return cls(kind)
        if code != _MAP:
            shape = _SHAPE[code]
            _check_size(body, shape.size)
            values = shape.unpack(body)
            if code == _POINT:
                return cls(kind, values[0], values[1], extent=0.0)
            if code == _ELLIPSE:
                return cls(kind, values[0], values[1], values[2], values[3], values[4], extent=values[2])
            return cls(kind, values[0], values[1], values[2], extent=values[2])
        if len(body) < _MAP_HEAD.size:
            raise ValueError("sky-map footprint header is truncated")
        ra, dec, extent, order, region_order, threshold, n_runs, n_region = _MAP_HEAD.unpack_from(body)
        off = _MAP_HEAD.size
        starts = np.frombuffer(body, "<u4", n_runs, off).astype(np.int64) if n_runs else _empty_int()
        off += 4 * n_runs
        lengths = np.frombuffer(body, "<u4", n_runs, off).astype(np.int64) if n_runs else _empty_int()
        off += 4 * n_runs
        n = int(lengths.sum())
        _check_size(body, off + 8 * n + 4 * n_region)
        prob = np.frombuffer(body, "<f8", n, off).astype(np.float64)
        off += 8 * n
        region = np.frombuffer(body, "<u4", n_region, off).astype(np.int64)
        first = np.cumsum(lengths) - lengths
        ipix = np.repeat(starts - first, lengths) + np.arange(n, dtype=np.int64)
        return cls(
            kind, ra, dec, extent=None if math.isnan(extent) else extent, order=order, ipix=ipix, prob=prob,
            threshold=threshold, region_order=region_order, region=region,
        )

    # ------------------------------------------------------------------ derived, cached
    @cached_property
    def _code(self) -> int:
        return _KIND_CODE[self.kind]

    @cached_property
    def _row(self) -> tuple[float, ...]:
        """Numbers :func:`compare_many` vectorises: code, ra, dec, a90, b90, pa, extent (NaN when absent)."""
        nan = math.nan

        def f(x: float | None) -> float:
            return nan if x is None else float(x)

        a = 0.0 if self.kind == "point" else f(self.radius)
        b = f(self.semi_minor) if self.kind == "ellipse" else a
        pa = f(self.position_angle) if self.kind == "ellipse" else 0.0
        return (float(self._code), f(self.ra), f(self.dec), a, b, pa, f(self.extent))

    @cached_property
    def _row_bytes(self) -> bytes:
        return _ROW.pack(*self._row)

    @cached_property
    def _kappa(self) -> float:
        return float(fisher_kappa(self.radius or 0.0))

    @cached_property
    def _in_region(self) -> BoolArray:
        """Whether each kept pixel is in the 90 % credible region."""
        if self.threshold is None:
            return np.zeros(self.prob.size, dtype=np.bool_)
        return np.asarray(self.prob >= self.threshold, dtype=np.bool_)

    @cached_property
    def _coarse_region_vectors(self) -> FloatArray:
        """Unit vectors (n, 3) of the centres of the coarse 90 %-region pixels at ``region_order``."""
        assert self.region_order is not None  # noqa: S101 - sky maps only
        return np.column_stack(hp.pix2vec(1 << self.region_order, self.region, nest=True))

    @cached_property
    def _region_vectors(self) -> FloatArray:
        """Unit vectors (n, 3) of the centres of the 90 %-region pixels at ``order``."""
        assert self.order is not None  # noqa: S101 - sky maps only
        pix = self.ipix[self._in_region]
        return np.column_stack(hp.pix2vec(1 << self.order, pix, nest=True))

    @cached_property
    def _gauss_cache(self) -> dict[int, tuple[int, IntArray, FloatArray]]:
        return {}

    @cached_property
    def _density_cache(self) -> dict[int, _Density]:
        return {}

    @cached_property
    def _disc_cache(self) -> dict[int, IntArray | None]:
        return {}

    def _support_disc(self, map_order: int) -> IntArray | None:
        """Pixels of order ``min(map_order, _SUPPORT_ORDER)`` that meet the disc over which this region's
        density is integrated against a map of ``map_order``, grown by one integration pixel and one map pixel
        (None: the whole sky); cached, as a window's region meets many maps."""
        if map_order not in self._disc_cache:
            assert self.ra is not None and self.dec is not None  # noqa: S101, PT018 - regions only
            order, reach, _, _ = _region_grid(self, map_order)
            radius = reach + hp.max_pixrad(1 << order) + hp.max_pixrad(1 << map_order)
            nside = 1 << min(map_order, _SUPPORT_ORDER)
            self._disc_cache[map_order] = None if radius >= math.pi else np.asarray(
                hp.query_disc(nside, _unit(self.ra, self.dec), radius, inclusive=True, nest=True), dtype=np.int64)
        return self._disc_cache[map_order]

    def _gauss(self, min_order: int) -> tuple[int, IntArray, FloatArray]:
        """The region's density discretized: (order, sorted pixel ids, probabilities summing to 1).

        At ``min_order`` or finer when that fits in ``_GAUSS_MAX_PIXELS``, so
        that a sky map of that order is integrated by lookups in the map.
        """
        cached = self._gauss_cache.get(min_order)
        if cached is None:
            cached = self._gauss_cache[min_order] = _discretize_region(self, min_order)
        return cached


def _check_size(body: memoryview, size: int) -> None:
    if len(body) != size:
        raise ValueError(f"footprint body is {len(body)} bytes, expected {size}")


def region_footprint(region: Region | None) -> Footprint:
    """The footprint of an error region (90 % shapes, see the module notes); ``none`` for None."""
    if region is None:
        return Footprint("none")
    if isinstance(region, Point):
        return Footprint("point", float(region.ra), float(region.dec), extent=0.0)
    scale = _scale(region.containment)
    if isinstance(region, Circle):
        if region.radius <= 0:
            return Footprint("point", float(region.ra), float(region.dec), extent=0.0)
        r = min(float(region.radius) * scale, 180.0)
        return Footprint("circle", float(region.ra), float(region.dec), r, extent=r)
    if isinstance(region, Ellipse):
        a = min(float(region.semi_major) * scale, 180.0)
        b = min(float(region.semi_minor) * scale, a)
        if a <= 0:
            return Footprint("point", float(region.ra), float(region.dec), extent=0.0)
        return Footprint("ellipse", float(region.ra), float(region.dec), a, b, float(region.position_angle), extent=a)
    if isinstance(region, Rectangle):
        corners = np.asarray(region.corners, dtype=np.float64).reshape(-1, 2)
        r0 = float(np.max(separation(region.ra, region.dec, corners[:, 0], corners[:, 1]))) if corners.size else 0.0
        if r0 <= 0:
            return Footprint("point", float(region.ra), float(region.dec), extent=0.0)
        r = min(r0 * scale, 180.0)
        return Footprint("rectangle", float(region.ra), float(region.dec), r, extent=r)
    raise TypeError(f"not a region: {region!r}")


def _scale(containment: float | None) -> float:
    if containment is None or containment >= 1.0 or containment <= 0.0:
        return 1.0
    return gaussian_radius_scale(containment, REGION_LEVEL)


def footprint(
    alert: Alert,
    *,
    order: int = DEFAULT_ORDER,
    keep: float = DEFAULT_KEEP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    region_order: int = REGION_ORDER,
) -> Footprint:
    """The footprint of an alert's localization: its sky map if it has one, else its region.

    Parameters
    ----------
    alert
        The alert.
    order, keep, max_pixels, region_order
        Sky maps only, see :func:`skymap_footprint`.
    """
    if alert.skymap is not None:
        return skymap_footprint(
            alert.skymap, alert.position, order=order, keep=keep, max_pixels=max_pixels, region_order=region_order
        )
    return region_footprint(alert.region)


def skymap_footprint(
    skymap: SkyMap,
    position: tuple[float, float] | None = None,
    *,
    order: int = DEFAULT_ORDER,
    keep: float = DEFAULT_KEEP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    region_order: int = REGION_ORDER,
) -> Footprint:
    """The sparse footprint of a multi-order sky map (see the module notes).

    Parameters
    ----------
    skymap
        The map (NUNIQ, density in sr^-1; need not be normalized).
    position
        Best position (RA, Dec in deg); the map's peak by default.
    order
        Finest HEALPix order of the footprint, at most 13; the map's own
        deepest order if that is coarser.
    keep
        Probability content of the kept pixels, in (0.9, 1].
    max_pixels
        Most kept pixels: the order is lowered until they fit.
    region_order
        Order of the coarse copy of the 90 % region.

    Raises
    ------
    ValueError
        On a bad parameter or a map with no probability.
    """
    if not 0 <= order <= _MAX_ORDER:
        raise ValueError(f"order {order} is not in [0, {_MAX_ORDER}]")
    if not REGION_LEVEL < keep <= 1.0:
        raise ValueError(f"keep {keep} is not in ({REGION_LEVEL}, 1]")
    if max_pixels < 12:
        raise ValueError(f"max_pixels {max_pixels} is below the 12 pixels of order 0")
    nat_order = np.asarray(skymap.order, dtype=np.int64)
    nat_ipix = np.asarray(skymap.ipix, dtype=np.int64)
    p = np.asarray(skymap.probability, dtype=np.float64)
    total = float(p.sum())
    if not total > 0 or not math.isfinite(total):
        raise ValueError("sky map holds no probability")
    p = p / total
    target = min(order, int(nat_order.max()))
    while True:
        sel_order, sel_ipix, sel_p, n_keep, crossing = _select(nat_order, nat_ipix, p, target, keep)
        count = int(np.sum(np.int64(1) << (2 * (target - sel_order[:n_keep]))))
        if count <= max_pixels or target == 0:
            break
        target = max(0, min(target - 1, target - math.ceil(math.log(count / max_pixels, 4))))
    # expand the kept pixels to ``target``; a coarse pixel's probability is split evenly among its children
    k_order, k_ipix, k_p = sel_order[:n_keep], sel_ipix[:n_keep], sel_p[:n_keep]
    span = np.int64(1) << (2 * (target - k_order))
    split = k_p / span.astype(np.float64)
    first = np.cumsum(span) - span
    n = int(span.sum())
    ipix = np.repeat(k_ipix * span - first, span) + np.arange(n, dtype=np.int64)
    prob = np.repeat(split, span)
    srt = np.argsort(ipix, kind="stable")
    ipix, prob = ipix[srt], prob[srt]
    kept_total = float(prob.sum())
    prob = prob / kept_total
    threshold = float(split[crossing] / kept_total)
    in_region = prob >= threshold
    r_order = min(region_order, target)
    region = np.unique(ipix[in_region] >> (2 * (target - r_order)))
    if position is None:
        position = skymap.max_position()
    ra, dec = float(position[0]), float(position[1])
    extent = _map_extent(ra, dec, target, ipix)
    return Footprint(
        "skymap", ra, dec, extent=extent, order=target, ipix=ipix, prob=prob, threshold=threshold,
        region_order=r_order, region=region,
    )


def _select(
    nat_order: IntArray, nat_ipix: IntArray, p: FloatArray, target: int, keep: float
) -> tuple[IntArray, IntArray, FloatArray, int, int]:
    """Merge pixels finer than ``target`` into their parents and sort by decreasing density.

    Returns the sorted orders, pixel ids, probabilities, the number of pixels
    holding ``keep`` and the index of the pixel crossing the 90 % level.
    """
    fine = nat_order > target
    if np.any(fine):
        parents = nat_ipix[fine] >> (2 * (nat_order[fine] - target))
        uniq_parents, inverse = np.unique(parents, return_inverse=True)
        merged = np.bincount(inverse, weights=p[fine])
        order = np.concatenate((nat_order[~fine], np.full(uniq_parents.size, target, dtype=np.int64)))
        ipix = np.concatenate((nat_ipix[~fine], uniq_parents))
        prob = np.concatenate((p[~fine], merged))
    else:
        order, ipix, prob = nat_order, nat_ipix, p
    density = np.ldexp(prob, (2 * order).astype(np.int32))  # probability per order-0-sized area
    srt = np.lexsort((ipix, order, -density))  # decreasing density; ties in a fixed order
    order, ipix, prob = order[srt], ipix[srt], prob[srt]
    cum = np.cumsum(prob)
    total = cum[-1]
    n_keep = min(int(np.searchsorted(cum, keep * total, side="left")) + 1, prob.size)
    crossing = min(int(np.searchsorted(cum, REGION_LEVEL * total, side="left")), prob.size - 1)
    return order.astype(np.int64), ipix.astype(np.int64), prob.astype(np.float64), n_keep, crossing


def _map_extent(ra: float, dec: float, order: int, ipix: IntArray) -> float | None:
    """Largest distance (deg) from (ra, dec) to a point of the given pixels; None if it is the whole sky."""
    nside = 1 << order
    vec = np.column_stack(hp.pix2vec(nside, ipix, nest=True))
    cos_max = float(np.min(_dot3(vec, _unit(ra, dec))))
    reach = math.degrees(math.acos(max(-1.0, min(1.0, cos_max)))) + math.degrees(hp.max_pixrad(nside))
    return None if reach >= 180.0 else reach


def _region_grid(fp: Footprint, min_order: int) -> tuple[int, float, float, float]:
    """How a circle's or ellipse's density is discretized: (order, reach, wide, narrow), angles in rad.

    ``wide`` and ``narrow`` are the density's widths (equal for a circle's
    Fisher density), ``reach`` the truncation radius (``_GAUSS_WIDTHS``
    widths), ``order`` the HEALPix order of the integration pixels (see
    :func:`_discretize_region`).
    """
    assert fp.ra is not None and fp.dec is not None and fp.radius is not None  # noqa: S101, PT018 - regions only
    if fp.kind == "ellipse":
        assert fp.semi_minor is not None and fp.position_angle is not None  # noqa: S101, PT018
        wide = math.radians(fp.radius) / _K90
        narrow = max(math.radians(fp.semi_minor) / _K90, 1e-12)
    else:
        wide = narrow = 1.0 / math.sqrt(fp._kappa) if fp._kappa > 0 else math.pi
    reach = _GAUSS_WIDTHS * wide
    disc_sr = 2.0 * math.pi * (1.0 - math.cos(min(reach, math.pi)))
    needed = min(29, max(0, math.ceil(math.log2(_SQRT_PI_3 / (_GAUSS_PIXEL * narrow)))))
    order = max(needed, min_order)
    while order > 0 and disc_sr / (math.pi / 3.0 / 4.0**order) > _GAUSS_MAX_PIXELS:
        order -= 1
    return order, reach, wide, narrow


def _discretize_region(fp: Footprint, min_order: int) -> tuple[int, IntArray, FloatArray]:
    """Probabilities of a circle's Fisher (or an ellipse's Gaussian) density on HEALPix pixels.

    Pixels no larger than ``_GAUSS_PIXEL`` widths (and of order >= ``min_order``
    if they fit in ``_GAUSS_MAX_PIXELS``), out to ``_GAUSS_WIDTHS`` widths from
    the centre.  Midpoint values, normalized to sum 1, have an error of order
    (pixel / width)^2 (about 1 % where a sky map rises steeply across the
    region): when the next coarser order is still >= ``min_order`` (the map's
    pixels are then unions of pixels of both orders), the two midpoint sums are
    combined by Richardson extrapolation, ``(4 I_o - I_{o-1}) / 3``, written as
    one set of weights at order o (the coarse weights shared among children);
    the error drops to about 0.05 %.
    """
    order, reach, wide, narrow = _region_grid(fp, min_order)
    pix, w = _region_weights(fp, order, reach, wide, narrow)
    if order >= 1 and order - 1 >= min_order:
        pix_c, w_c = _region_weights(fp, order - 1, reach, wide, narrow)
        both, inverse = np.unique(np.concatenate((pix, (pix_c[:, None] * 4 + np.arange(4)).ravel())),
                                  return_inverse=True)
        weights = np.concatenate((w * (4.0 / 3.0), np.repeat(w_c * (-1.0 / 12.0), 4)))
        combined = np.asarray(np.bincount(inverse, weights=weights, minlength=both.size), dtype=np.float64)
        return order, both.astype(np.int64), combined
    return order, pix, w


def _region_weights(fp: Footprint, order: int, reach: float, wide: float, narrow: float) -> tuple[IntArray, FloatArray]:
    """Pixels of ``order`` within ``reach`` (rad) of a region's centre and its density there, summing to 1."""
    assert fp.ra is not None and fp.dec is not None  # noqa: S101, PT018
    nside = 1 << order
    v0 = _unit(fp.ra, fp.dec)
    if reach >= math.pi:
        pix = np.arange(12 * nside * nside, dtype=np.int64)
    else:
        pix = np.sort(hp.query_disc(nside, v0, reach, nest=True).astype(np.int64))
        if pix.size == 0:
            pix = np.array([hp.vec2pix(nside, *v0, nest=True)], dtype=np.int64)
    vec = np.column_stack(hp.pix2vec(nside, pix, nest=True))
    if fp.kind == "ellipse":
        ra_p, dec_p = hp.vec2ang(vec, lonlat=True)
        theta = np.radians(separation(fp.ra, fp.dec, ra_p, dec_p))
        phi = _bearing(fp.ra, fp.dec, ra_p, dec_p) - math.radians(fp.position_angle or 0.0)
        w = np.exp(-0.5 * (np.square(theta * np.cos(phi) / wide) + np.square(theta * np.sin(phi) / narrow)))
    else:
        w = np.exp(-0.5 * fp._kappa * np.sum(np.square(vec - v0), axis=1))  # exp(k (cos t - 1))
    total = float(w.sum())
    if not total > 0:  # pixels far from the centre only (reach below a pixel): the nearest takes all
        w = np.zeros(pix.size)
        w[int(np.argmax(_dot3(vec, v0)))] = 1.0
        total = 1.0
    return pix, w / total


# --------------------------------------------------------------------------- sky-map lookups


class _Density:
    """A piecewise-constant density on the pixels of one HEALPix order, for overlap integrals.

    ``prob`` holds the probability of each pixel ``ipix`` (sorted); ``region``
    flags the 90 % credible region (None for the densities of circles and
    ellipses, which take no part in the region tests).  A dense table over
    every pixel of the order can be built when many lookups are coming.
    """

    __slots__ = (
        "_coarse", "_keys", "_summed", "_support", "dense_p", "dense_r", "fp", "ipix", "order", "prob", "region",
    )

    def __init__(
        self, order: int, ipix: IntArray, prob: FloatArray, region: BoolArray | None, fp: Footprint | None = None
    ) -> None:
        self.order = order
        self.ipix = ipix
        self.prob = prob
        self.region = region
        self.fp = fp
        self.dense_p: FloatArray | None = None
        self.dense_r: BoolArray | None = None
        self._keys: dict[int, IntArray] = {}
        self._summed: dict[int, tuple[IntArray, FloatArray]] = {}
        self._coarse: dict[int, BoolArray] = {}
        self._support: dict[int, BoolArray] = {}

    @classmethod
    def of_map(cls, fp: Footprint) -> _Density:
        assert fp.order is not None  # noqa: S101 - sky maps only
        return cls(fp.order, fp.ipix, fp.prob, fp._in_region, fp)

    @classmethod
    def of_region(cls, fp: Footprint, min_order: int) -> _Density:
        """A circle's or ellipse's discretized density (cached on the footprint with its lookup tables)."""
        density = fp._density_cache.get(min_order)
        if density is None:
            order, ipix, prob = fp._gauss(min_order)
            density = fp._density_cache[min_order] = cls(order, ipix, prob, None, fp)
        return density

    def make_dense(self) -> None:
        """Build the tables over every pixel of the order (1 MB per million pixels)."""
        npix = 12 << (2 * self.order)
        self.dense_p = np.zeros(npix, dtype=np.float64)
        self.dense_p[self.ipix] = self.prob
        if self.region is not None:
            self.dense_r = np.zeros(npix, dtype=np.bool_)
            self.dense_r[self.ipix[self.region]] = True

    def lookup(self, keys: IntArray) -> tuple[FloatArray, BoolArray | None]:
        """Probability and 90 %-region membership of the pixels ``keys`` of this order (0 / False if not kept)."""
        if self.dense_p is not None:
            return self.dense_p[keys], None if self.dense_r is None else self.dense_r[keys]
        ipix = self.ipix
        idx = np.minimum(np.searchsorted(ipix, keys), ipix.size - 1)
        hit = ipix[idx] == keys
        p = np.where(hit, self.prob[idx], 0.0)
        return p, None if self.region is None else hit & self.region[idx]

    def parents(self, levels: int) -> IntArray:
        """The pixel ids ``levels`` orders up (cached: the query side of a window reuses them)."""
        keys = self._keys.get(levels)
        if keys is None:
            keys = self.ipix >> (2 * levels)
            self._keys[levels] = keys
        return keys

    def summed(self, levels: int) -> tuple[IntArray, FloatArray]:
        """The pixels ``levels`` orders up, each once (sorted), with the probability of its children summed."""
        cached = self._summed.get(levels)
        if cached is None:
            keys = self.parents(levels)
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            cached = self._summed[levels] = (keys[starts], np.add.reduceat(self.prob, starts))
        return cached

    def support(self, order: int) -> BoolArray:
        """The kept pixels seen at a coarser ``order``, as a mask over every pixel of that order."""
        mask = self._support.get(order)
        if mask is None:
            mask = np.zeros(12 << (2 * order), dtype=np.bool_)
            mask[self.ipix >> (2 * (self.order - order))] = True
            self._support[order] = mask
        return mask

    def coarse_region(self, order: int) -> BoolArray:
        """A sky map's 90 % region at a coarse ``order`` (<= its region order) as a mask over every pixel."""
        mask = self._coarse.get(order)
        if mask is None:
            fp = self.fp
            assert fp is not None and fp.region_order is not None  # noqa: S101, PT018
            mask = np.zeros(12 << (2 * order), dtype=np.bool_)
            mask[fp.region >> (2 * (fp.region_order - order))] = True
            self._coarse[order] = mask
        return mask


def _integrate(x: _Density, y: _Density, region: bool) -> tuple[float, bool]:
    """Overlap integral of two densities, and whether their 90 % regions share a pixel (if ``region``).

    The pixels of the finer density are looked up in the coarser one at their
    parent: ``I = 4 pi / A_coarse * sum_fine p_fine * p_coarse(parent)``,
    exact for piecewise-constant maps.  A finer region density (no 90 %
    flags to carry) is first summed onto the parents, once per order and
    cached: the same sum with up to 4^levels times fewer lookups.
    """
    if x.order < y.order or (x.order == y.order and y.dense_p is None and x.dense_p is not None):
        x, y = y, x  # x: the finer (its pixels are the needles), y: looked up
    levels = x.order - y.order
    keys, prob = x.summed(levels) if levels and x.region is None else (x.parents(levels), x.prob)
    # only the needles between y's first and last pixel can hit (keys are sorted)
    lo = int(np.searchsorted(keys, y.ipix[0], side="left"))
    hi = int(np.searchsorted(keys, y.ipix[-1], side="right"))
    if hi <= lo:
        return 0.0, False
    p, r = y.lookup(keys[lo:hi])
    overlap = float(np.einsum("i,i->", prob[lo:hi], p)) * (12 << (2 * y.order))
    if not region or r is None or x.region is None:
        return overlap, False
    return overlap, bool(np.any(r & x.region[lo:hi]))


def _map_map(qa: _Density, b: Footprint, sep: float) -> SpatialResult:
    a = qa.fp
    assert a is not None and b.region_order is not None and a.region_order is not None  # noqa: S101, PT018
    if a.extent is not None and b.extent is not None and sep > a.extent + b.extent:
        return _result("skymap-overlap", False, 0.0, sep)
    assert b.order is not None  # noqa: S101
    coarse = min(a.region_order, b.region_order)
    low = min(coarse, _SUPPORT_ORDER)
    if not qa.support(low)[b.ipix >> (2 * (b.order - low))].any():  # kept pixels apart: a cheap exact zero
        return _result("skymap-overlap", False, 0.0, sep)
    maybe = bool(np.any(qa.coarse_region(coarse)[b.region >> (2 * (b.region_order - coarse))]))
    overlap, coincident = _integrate(qa, _Density.of_map(b), maybe)
    return _result("skymap-overlap", coincident, overlap, sep)


def _map_region(qa: _Density, b: Footprint, sep: float) -> SpatialResult:
    """A sky map (``qa``) against a point, circle, rectangle or ellipse ``b``."""
    a = qa.fp
    assert a is not None and a.order is not None and b.ra is not None and b.dec is not None  # noqa: S101, PT018
    if b.kind == "point":
        key = np.array([hp.ang2pix(1 << a.order, b.ra, b.dec, nest=True, lonlat=True)], dtype=np.int64)
        p, r = qa.lookup(key)
        return _result("skymap-point", bool(r is not None and r[0]), float(p[0]) * (12 << (2 * a.order)), sep)
    assert b.radius is not None  # noqa: S101
    pixrad = math.degrees(hp.max_pixrad(1 << a.order))
    coincident = False
    if a.extent is None or sep <= a.extent + b.radius:
        vec = a._region_vectors
        near = _dot3(vec, _unit(b.ra, b.dec)) >= math.cos(math.radians(min(180.0, b.radius + pixrad)))
        if b.kind == "ellipse" and np.any(near):
            assert b.semi_minor is not None and b.position_angle is not None  # noqa: S101, PT018
            ra_p, dec_p = hp.vec2ang(vec[near], lonlat=True)
            coincident = bool(np.any(_in_ellipse(b.ra, b.dec, b.radius + pixrad, b.semi_minor + pixrad,
                                                 b.position_angle, ra_p, dec_p)))
        else:
            coincident = bool(np.any(near))
    width = b.radius / _K90 if b.kind == "ellipse" else math.degrees(1.0 / math.sqrt(max(b._kappa, 1e-300)))
    if a.extent is not None and sep > a.extent + _GAUSS_WIDTHS * width:
        return _result("skymap-point", coincident, 0.0, sep)
    if qa.order not in b._gauss_cache and not _region_meets_support(qa, b):
        return _result("skymap-point", coincident, 0.0, sep)  # the map keeps no pixel where the density is
    overlap, _ = _integrate(qa, _Density.of_region(b, qa.order), False)
    return _result("skymap-point", coincident, max(overlap, 0.0), sep)


def _region_meets_support(qa: _Density, b: Footprint) -> bool:
    """Whether a sky map keeps a pixel inside the disc over which region ``b``'s density is integrated.

    The discretization of ``b`` (against a map of ``qa.order``) covers the
    pixels within ``reach`` of its centre; a map pixel can take part in the
    integral only if it meets that disc grown by one integration pixel.  The
    test runs on the map's kept pixels at order <= ``_SUPPORT_ORDER``
    (``query_disc`` inclusive), so a False is an exact zero of the integral
    and saves the discretization (most of the cost of a point-like alert that
    meets a broad map in time but not on the sky).
    """
    pix = b._support_disc(qa.order)
    return pix is None or bool(qa.support(min(qa.order, _SUPPORT_ORDER))[pix].any())


# --------------------------------------------------------------------------- results and tests


@dataclass(frozen=True)
class SpatialResult:
    """The spatial test of one pair of footprints.

    Parameters
    ----------
    test
        Which test was run (:data:`SpatialTest`, see the module notes):
        ``skymap-overlap``, ``skymap-point``, ``region-overlap``,
        ``point-in-region``, ``point-point`` or ``none``.
    coincident
        Whether the localizations agree (90 % regions intersect; always True
        for ``none``).
    overlap
        RAVEN's overlap integral I_Omega (dimensionless, >= 0); None for
        ``none`` and ``point-point``.
    separation
        Angle between the two best positions, deg; None if either has none.
    """

    test: SpatialTest
    coincident: bool
    overlap: float | None
    separation: float | None


_NONE_RESULT = SpatialResult("none", True, None, None)
_new = object.__new__


def _result(test: SpatialTest, coincident: bool, overlap: float | None, sep: float | None) -> SpatialResult:
    """A :class:`SpatialResult` built without the dataclass ``__init__`` (2.5 x faster for large windows)."""
    r = _new(SpatialResult)
    d = r.__dict__
    d["test"] = test
    d["coincident"] = coincident
    d["overlap"] = overlap
    d["separation"] = sep
    return r


def compare(a: Footprint, b: Footprint) -> SpatialResult:
    """The spatial test of two footprints (symmetric; see the module notes)."""
    return compare_many(a, [b])[0]


def overlap_integral(a: Footprint, b: Footprint) -> float | None:
    """RAVEN's overlap integral I_Omega of two footprints, None for ``none`` or two points."""
    return compare(a, b).overlap


def compare_many(a: Footprint, others: Sequence[Footprint]) -> list[SpatialResult]:
    """The spatial tests of ``a`` against each of ``others`` (in order).

    Point-like pairs are computed together with numpy, and so are the points
    and regions compared with a sky map; a sky map's lookup tables are built
    once for all the others.  Two maps whose extents are too far apart, or
    whose kept pixels do not meet at order 4, skip the integral (overlap
    exactly 0), and their coarse 90 % regions reject most non-coincident pairs
    before the fine test.

    Parameters
    ----------
    a
        The new alert's footprint.
    others
        Footprints to compare it with (e.g. the window's candidates).

    Returns
    -------
    list of SpatialResult
        One per footprint of ``others``, in order; ``test`` names which test
        ran, ``overlap`` is RAVEN's I_Omega, ``separation`` in deg.
    """
    n = len(others)
    if n == 0:
        return []
    if a._code == _NONE:
        return [_NONE_RESULT] * n
    rows = np.frombuffer(b"".join([o._row_bytes for o in others]), dtype=np.float64).reshape(n, 7)
    codes = rows[:, 0].astype(np.int64)
    seps = separation(a._row[1], a._row[2], rows[:, 1], rows[:, 2])
    out: list[SpatialResult | None] = [None] * n
    for i in np.flatnonzero(codes == _NONE).tolist():
        out[i] = _NONE_RESULT
    is_map = codes == _MAP
    if a._code == _MAP:
        _compare_from_map(a, others, rows, seps, out)
    else:
        maps = np.flatnonzero(is_map).tolist()
        for i in maps:
            out[i] = _map_region(_Density.of_map(others[i]), a, float(seps[i]))
        _compare_regions(a, rows, seps, out)
    return out  # type: ignore[return-value]


def _compare_from_map(
    a: Footprint, others: Sequence[Footprint], rows: FloatArray, seps: FloatArray, out: list[SpatialResult | None]
) -> None:
    """Sky map ``a`` against every other footprint; points and regions in batches."""
    assert a.order is not None  # noqa: S101
    mo = a.order
    npix = 12 << (2 * mo)
    codes = rows[:, 0].astype(np.int64)
    qa = _Density.of_map(a)
    maps = np.flatnonzero(codes == _MAP).tolist()
    points = np.flatnonzero(codes == _POINT)
    regions = np.flatnonzero((codes >= _CIRCLE) & (codes <= _RECT))
    # region densities are integrated only out to _GAUSS_WIDTHS widths
    radius = rows[regions, 3]
    is_ellipse = codes[regions] == _ELLIPSE
    with np.errstate(divide="ignore"):
        width = np.where(is_ellipse, radius / _K90, np.degrees(1.0 / np.sqrt(fisher_kappa(radius))))
    reach = np.ones(regions.size, dtype=np.bool_) if a.extent is None else (
        seps[regions] <= a.extent + _GAUSS_WIDTHS * width)
    for k in np.flatnonzero(reach).tolist():  # an exact zero where the map keeps nothing under the density
        b = others[int(regions[k])]
        reach[k] = mo in b._gauss_cache or _region_meets_support(qa, b)
    gauss = [others[i]._gauss(mo) for i in regions[reach].tolist()]
    needles = sum(g[1].size for g in gauss if g[0] >= mo)  # pixels looked up in ``a``
    for i in maps:
        b = others[i]
        assert b.order is not None  # noqa: S101
        if b.order >= mo and not (a.extent is not None and b.extent is not None and seps[i] > a.extent + b.extent):
            needles += b.ipix.size
    if needles * _DENSE_COST > npix:
        qa.make_dense()
    for i in maps:
        out[i] = _map_map(qa, others[i], float(seps[i]))
    if points.size:
        pix = hp.ang2pix(1 << mo, rows[points, 1], rows[points, 2], nest=True, lonlat=True).astype(np.int64)
        p, r = qa.lookup(pix)
        assert r is not None  # noqa: S101 - a sky map has a region
        for i, o, co, sp in zip(points.tolist(), (p * npix).tolist(), r.tolist(), seps[points].tolist(),
                                strict=True):
            out[i] = _result("skymap-point", co, o, sp)
    if regions.size == 0:
        return
    overlap = np.zeros(regions.size)
    overlap[reach] = _batch_integrals(qa, gauss)
    coincident = _regions_hit_map(a, rows[regions], seps[regions])
    for i, o, co, sp in zip(regions.tolist(), overlap.tolist(), coincident.tolist(), seps[regions].tolist(),
                            strict=True):
        out[i] = _result("skymap-point", co, o, sp)


def _batch_integrals(qa: _Density, gauss: Sequence[tuple[int, IntArray, FloatArray]]) -> FloatArray:
    """Overlap integrals of the map ``qa`` with many discretized region densities.

    Densities at the map's order or finer are looked up together, one group per
    order (one lookup, one ``add.reduceat``); coarser ones one by one.
    """
    out = np.zeros(len(gauss))
    by_order: dict[int, list[int]] = {}
    for j, (order, _, _) in enumerate(gauss):
        if order >= qa.order:
            by_order.setdefault(order, []).append(j)
        else:
            out[j] = _integrate(qa, _Density(order, gauss[j][1], gauss[j][2], None), False)[0]
    for order, members in by_order.items():
        keys = np.concatenate([gauss[j][1] for j in members]) >> (2 * (order - qa.order))
        prob = np.concatenate([gauss[j][2] for j in members])
        sizes = np.array([gauss[j][1].size for j in members])
        p, _ = qa.lookup(keys)
        sums = np.add.reduceat(prob * p, np.cumsum(sizes) - sizes)
        out[members] = sums * (12 << (2 * qa.order))
    return np.maximum(out, 0.0)  # Richardson weights can dip below 0 at the truncation edge


def _regions_hit_map(a: Footprint, rows: FloatArray, seps: FloatArray) -> BoolArray:
    """Whether each region (rows: code, ra, dec, a90, b90, pa) meets the map's 90 % region.

    True when a pixel of the map's 90 % region lies within the region enlarged
    by the largest pixel radius (the pixel then overlaps the region, to one
    pixel).  Regions are first tested against the coarse copy of the 90 %
    region (with the coarse pixel radius), then the survivors at full order.
    """
    assert a.order is not None and a.region_order is not None  # noqa: S101, PT018
    radius = rows[:, 3]
    hit = np.zeros(rows.shape[0], dtype=np.bool_)
    todo = np.flatnonzero(np.ones(rows.shape[0], dtype=np.bool_) if a.extent is None else seps <= a.extent + radius)
    for order, vec in ((a.region_order, a._coarse_region_vectors), (a.order, a._region_vectors)):
        if todo.size == 0:
            break
        pixrad = math.degrees(hp.max_pixrad(1 << order))
        centres = _unit(rows[todo, 1], rows[todo, 2])
        cos_r = np.cos(np.radians(np.minimum(180.0, radius[todo] + pixrad)))
        inside = np.zeros(todo.size, dtype=np.bool_)
        step = max(1, 1_000_000 // max(1, vec.shape[0]))
        for k in range(0, todo.size, step):
            c = centres[k:k + step]
            dots = c[:, 0:1] * vec[:, 0] + c[:, 1:2] * vec[:, 1] + c[:, 2:3] * vec[:, 2]  # not BLAS: see _dot3
            near = dots >= cos_r[k:k + step, None]
            inside[k:k + step] = near.any(axis=1)
            if order != a.order:
                continue
            for m in np.flatnonzero(rows[todo[k:k + step], 0] == _ELLIPSE).tolist():
                i = int(todo[k + m])
                ra_p, dec_p = hp.vec2ang(vec[near[m]], lonlat=True)
                inside[k + m] = bool(np.any(_in_ellipse(rows[i, 1], rows[i, 2], radius[i] + pixrad,
                                                        rows[i, 4] + pixrad, rows[i, 5], ra_p, dec_p)))
        todo = todo[inside]
    hit[todo] = True
    return hit


_TEST_NAMES = np.array(["point-point", "point-in-region", "region-overlap"], dtype=object)
_PP, _PIR, _RO = 0, 1, 2


def _compare_regions(a: Footprint, rows: FloatArray, seps: FloatArray, out: list[SpatialResult | None]) -> None:
    """Point-like ``a`` against the point-like rows (codes 1-4), all at once with numpy."""
    codes = rows[:, 0]
    sel = (codes >= _POINT) & (codes <= _RECT)
    if sel.all():
        idx = np.arange(rows.shape[0])
        r, c, sep = rows, codes, seps
    else:
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            return
        r, c, sep = rows[idx], codes[idx], seps[idx]
    sep_rad = np.radians(sep)
    rb = r[:, 3]
    b_point = c == _POINT
    b_ellipse = c == _ELLIPSE
    a_code = a._code
    a_row = np.array(a._row)
    with np.errstate(all="ignore"):  # points (radius 0, infinite concentration) are masked out below
        if a_code == _POINT:
            test = np.where(b_point, _PP, _PIR)
            coincident = np.where(b_point, sep <= POINT_MATCH_RADIUS, sep <= rb)
            overlap = np.where(b_point, np.nan, _fisher_density(fisher_kappa(rb), sep_rad))
            if b_ellipse.any():
                e = r[b_ellipse]
                coincident[b_ellipse] = _in_ellipse(e[:, 1], e[:, 2], e[:, 3], e[:, 4], e[:, 5], a_row[1], a_row[2])
                overlap[b_ellipse] = _gauss_density(e[:, 1], e[:, 2], e[:, 3], e[:, 4], e[:, 5], a_row[1], a_row[2])
        else:
            test = np.where(b_point, _PIR, _RO)
            if a_code == _ELLIPSE:
                coincident = np.zeros(c.size, dtype=np.bool_)
                overlap = np.zeros(c.size)
                if b_point.any():
                    pts = r[b_point]
                    shape = (a_row[1], a_row[2], a_row[3], a_row[4], a_row[5])
                    coincident[b_point] = _in_ellipse(*shape, pts[:, 1], pts[:, 2])
                    overlap[b_point] = _gauss_density(*shape, pts[:, 1], pts[:, 2])
                gauss = ~b_point
            else:
                coincident = sep <= a_row[3] + rb
                ka = np.full(c.size, a._kappa)
                overlap = np.where(
                    b_point, _fisher_density(ka, sep_rad), _fisher_overlap(ka, fisher_kappa(rb), sep_rad)
                )
                gauss = b_ellipse
            if gauss.any():
                coincident[gauss] = _regions_intersect(a_row, r[gauss])
                overlap[gauss] = _gauss_overlap(a_row, r[gauss])
    ov = overlap.tolist()
    for j in np.flatnonzero(np.isnan(overlap)).tolist():
        ov[j] = None
    new = _new
    cls = SpatialResult
    for i, t, co, o, s in zip(idx.tolist(), _TEST_NAMES.take(test).tolist(), coincident.tolist(), ov, sep.tolist(),
                              strict=True):
        res = new(cls)  # the dataclass __init__ is 2.5 x slower: 500 results would take 0.5 ms
        d = res.__dict__
        d["test"] = t
        d["coincident"] = co
        d["overlap"] = o
        d["separation"] = s
        out[i] = res


def _gauss_density(
    ra0: npt.ArrayLike, dec0: npt.ArrayLike, a90: npt.ArrayLike, b90: npt.ArrayLike, pa: npt.ArrayLike,
    ra: npt.ArrayLike, dec: npt.ArrayLike,
) -> FloatArray:
    """4 pi times an elliptical 2-D Gaussian's density (sr^-1) at positions (azimuthal-equidistant plane)."""
    sa = np.radians(np.asarray(a90, dtype=np.float64)) / _K90
    sb = np.radians(np.asarray(b90, dtype=np.float64)) / _K90
    theta = np.radians(separation(ra0, dec0, ra, dec))
    phi = _bearing(ra0, dec0, ra, dec) - np.radians(np.asarray(pa, dtype=np.float64))
    m = np.square(theta * np.cos(phi) / sa) + np.square(theta * np.sin(phi) / sb)
    return np.asarray(2.0 * np.exp(-0.5 * m) / (sa * sb), dtype=np.float64)


def _gauss_overlap(a_row: FloatArray, rows: FloatArray) -> FloatArray:
    """``4 pi N(d; 0, S_a + S_b)`` for region ``a_row`` against ``rows`` (code, ra, dec, a90, b90, pa, ...).

    Both Gaussians are placed in the azimuthal-equidistant plane about the
    midpoint of their centres (position angles carried there along the
    great circle), so the result is symmetric in a and b.
    """
    ra_a, dec_a = a_row[1], a_row[2]
    ra_b, dec_b = rows[:, 1], rows[:, 2]
    mid = _unit(ra_a, dec_a) + _unit(ra_b, dec_b)
    norm = np.linalg.norm(mid, axis=1)
    mid = mid / np.maximum(norm, 1e-300)[:, None]
    ra_m = np.degrees(np.arctan2(mid[:, 1], mid[:, 0]))
    dec_m = np.degrees(np.arcsin(np.clip(mid[:, 2], -1.0, 1.0)))
    cov = np.zeros((rows.shape[0], 2, 2))
    pos = np.zeros((rows.shape[0], 2))
    for sign, (ra_c, dec_c, a90, b90, pa) in ((-1.0, tuple(a_row[1:6])), (1.0, tuple(rows[:, 1:6].T))):
        theta = np.radians(separation(ra_m, dec_m, ra_c, dec_c))
        to_c = _bearing(ra_m, dec_m, ra_c, dec_c)
        pa_m = np.radians(pa) - _bearing(ra_c, dec_c, ra_m, dec_m) + to_c + np.pi
        pos += sign * np.stack((theta * np.sin(to_c), theta * np.cos(to_c)), axis=1)
        u = np.stack((np.sin(pa_m), np.cos(pa_m)), axis=1)
        w = np.stack((np.cos(pa_m), -np.sin(pa_m)), axis=1)
        s1 = np.square(np.radians(a90) / _K90)
        s2 = np.square(np.radians(b90) / _K90)
        cov += (np.asarray(s1)[..., None, None] * u[:, :, None] * u[:, None, :]
                + np.asarray(s2)[..., None, None] * w[:, :, None] * w[:, None, :])
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
    quad = (cov[:, 1, 1] * pos[:, 0] ** 2 - 2.0 * cov[:, 0, 1] * pos[:, 0] * pos[:, 1]
            + cov[:, 0, 0] * pos[:, 1] ** 2) / det
    out = 2.0 * np.exp(-0.5 * quad) / np.sqrt(det)
    return np.asarray(np.where(norm > 1e-12, out, 0.0), dtype=np.float64)


def _regions_intersect(a_row: FloatArray, rows: FloatArray) -> BoolArray:
    """Whether the 90 % region ``a_row`` meets each of ``rows`` (ellipses; circles as round ellipses)."""
    k = rows.shape[0]
    ra_a = np.full(k, a_row[1])
    dec_a = np.full(k, a_row[2])
    aa, ab, apa = np.full(k, a_row[3]), np.full(k, a_row[4]), np.full(k, a_row[5])
    ra_b, dec_b, ba, bb, bpa = (rows[:, j] for j in range(1, 6))
    hit = _in_ellipse(ra_a, dec_a, aa, ab, apa, ra_b, dec_b) | _in_ellipse(ra_b, dec_b, ba, bb, bpa, ra_a, dec_a)
    bra, bdec = _ellipse_boundary(ra_b, dec_b, ba, bb, bpa)
    hit |= np.any(_in_ellipse(ra_a[:, None], dec_a[:, None], aa[:, None], ab[:, None], apa[:, None], bra, bdec),
                  axis=1)
    ara, adec = _ellipse_boundary(ra_a, dec_a, aa, ab, apa)
    hit |= np.any(_in_ellipse(ra_b[:, None], dec_b[:, None], ba[:, None], bb[:, None], bpa[:, None], ara, adec),
                  axis=1)
    return np.asarray(hit, dtype=np.bool_)

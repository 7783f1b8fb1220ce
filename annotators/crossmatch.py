# SPDX-License-Identifier: Apache-2.0
"""Vectorised positional matching of alert micro-batches against local catalogs.

Cone search
-----------
:func:`cone_pairs` finds, for arrays of centres and radii, every catalog
source within each centre's radius, for the whole batch at once:

1. each centre gets a HEALPix order ``k`` at which the cone is guaranteed to
   lie inside the centre's pixel and its (up to 8) neighbours
   (:func:`search_order`, bound :data:`NEIGHBOURHOOD_BOUND`); centres whose
   radius is too large even for order 0 start from the 12 base pixels;
2. the catalog's sources are sorted by their nested pixel at order 29, so the
   sources of any pixel of a coarser order are one contiguous range, found
   by a table lookup (orders <= 7, :meth:`Catalog.pixel_starts`) or
   ``np.searchsorted``;
3. when a centre's block holds many sources, its pixels are refined 1 to 3
   orders (up to order 7) and only the children that can touch the cone are
   kept; children entirely inside the cone (by a margin) need no exact test;
4. the ranges are expanded to candidate pairs with ``np.repeat``/``np.cumsum``
   (in chunks of about a million pairs) and cut exactly.

Python loops run over the distinct orders of the batch, refinement depths and
chunks, never over alerts.

The bound.  The cone stays inside the 3x3 block when its radius is below the
smallest distance from a pixel's boundary to the outer boundary of its
neighbours, which is about the smallest distance between opposite edges of a
pixel.  Measured numerically (dense sampling of points, including pixel
corners, the poles and the polar/equatorial transition at |Dec| = 41.8 deg),
that distance times ``2**k`` decreases from 0.842 rad at order 0 to about
0.69 rad at high orders; we use ``0.65 / 2**k`` rad.  The test suite checks
empirically that no point at that distance from random, polar and
pixel-corner positions leaves the block, and that points 30 % farther do.

Exactly the pairs of astropy
----------------------------
``astropy.coordinates.search_around_sky`` does not cut on the (Vincenty)
separation: a pair is in when the squared Euclidean distance of the two unit
vectors, computed by scipy's KD-tree as ``(dx*dx + dy*dy) + dz*dz``, is
``<=`` the square of the chord ``2 * sin(0.5 * seplimit)``.  :func:`cone_pairs`
uses the same unit vectors (``erfa.s2c`` on the same radians,
:func:`annotators.catalogs.unit_vectors`), the same chord and the same sum, so
its pairs are identical to astropy's, boundary ties included.  The returned
separation is ``2 asin(chord / 2)`` (``atan2(|a x s|, a . s)`` beyond 90 deg),
which agrees with astropy's Vincenty formula to ~1e-15 rad.

Shapes
------
:class:`CatalogAnnotator` then decides, per pair, with vectorised numpy:

* circles and ellipses are 2D Gaussians.  The 90 % region is used: a
  circle's stated 90 % radius when it has one (``containment`` 0.9 or an
  entry of ``other_radii``), else its radius scaled with
  ``r_p = sigma * sqrt(-2 ln(1 - p))``; an ellipse's semi-axes are scaled
  the same way.  A region without a stated containment is taken as a 90 %
  region (the annotation then says ``region_containment_assumed``).  Offsets
  of the source are measured in the azimuthal equidistant projection at the
  alert position (the true separation, along the position angle), so an
  ellipse with equal axes is exactly the circle.  ``containment`` is the
  Gaussian probability inside the source's contour, ``1 - exp(-m^2 / 2)`` with
  ``m`` the Mahalanobis distance, and ``source_in_region`` is
  ``containment <= 0.9``;
* rectangles (MAXI) and other polygons are used as stated (no scaling):
  ``source_in_region`` is point-in-spherical-polygon (edges are great
  circles), ``containment`` is ``None``;
* a point (no error) has no region: ``source_in_region`` and
  ``containment`` are ``None``, and it is matched only against catalogs whose
  sources have their own errors;
* for catalogs whose sources have error ellipses (4FGL 95 %, IceCat-1 90 %,
  Swift 90 %), ``alert_in_source_error`` says whether the alert's best
  position lies in the source's ellipse as stated (``None`` where the
  source's error is unknown).

A source is kept when it is inside the alert's 90 % region or the alert is
inside the source's error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import healpy as hp
import numpy as np
import numpy.typing as npt

from annotators.catalogs import DENSE_INDEX_MAX_ORDER, INDEX_ORDER, Catalog, unit_vectors
from broker.annotate import Need
from broker.model import (
    Alert,
    Annotation,
    CatalogMatch,
    Circle,
    Ellipse,
    Messenger,
    PropertyValue,
    Rectangle,
    Region,
    SkyMap,
    gaussian_radius_scale,
)

__all__ = [
    "MAX_SEARCH_ORDER",
    "NEIGHBOURHOOD_BOUND",
    "REGION_LEVEL",
    "CatalogAnnotator",
    "chord2_limit",
    "cone_pairs",
    "gaussian_radius",
    "neighbourhood_radius",
    "search_order",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NEIGHBOURHOOD_BOUND = 0.65
"""Cone radius (rad) covered by any pixel and its neighbours at order 0; ``/ 2**k`` at order ``k``."""
MAX_SEARCH_ORDER = 24
"""Finest order used for the search (pixels of ~12 mas: finer buys nothing)."""
REGION_LEVEL = 0.9
"""Containment of the alert region ``CatalogMatch.source_in_region`` refers to."""

_DEG2RAD = math.pi / 180.0
_K90 = math.sqrt(-2.0 * math.log(1.0 - REGION_LEVEL))
_MAX_CANDIDATES = 1 << 20  # candidate pairs per chunk (bounds the temporaries to ~50 MB)
_KIND_POINT, _KIND_GAUSS, _KIND_POLYGON = 0, 1, 2


# --------------------------------------------------------------------------- cone search


def neighbourhood_radius(order: int) -> float:
    """Largest cone radius (deg) a pixel and its neighbours at ``order`` are guaranteed to contain."""
    return math.degrees(NEIGHBOURHOOD_BOUND / (1 << order))


def search_order(radius: npt.ArrayLike) -> IntArray:
    """Per radius (deg), the finest order whose 3x3 pixel block covers the cone; -1: none does.

    Capped at :data:`MAX_SEARCH_ORDER`.
    """
    r = np.radians(np.asarray(radius, dtype=np.float64))
    with np.errstate(divide="ignore"):
        k = np.floor(np.log2(NEIGHBOURHOOD_BOUND / r))
    k = np.minimum(np.where(r > 0, k, MAX_SEARCH_ORDER), MAX_SEARCH_ORDER).astype(np.int64)
    # the float log2 may round up at exact powers of two: step back where the bound is not met
    k = np.where(r > np.ldexp(NEIGHBOURHOOD_BOUND, -np.maximum(k, 0)), k - 1, k)
    return np.where(k < 0, -1, k).astype(np.int64)


def chord2_limit(radius: npt.ArrayLike) -> FloatArray:
    """Squared chord of angular radii (deg), as ``search_around_sky`` hands it to scipy.

    ``(2 * sin(0.5 * r))**2`` with ``r`` converted to radians by astropy's own
    factor; a pair is within ``r`` when the squared distance of the unit
    vectors is ``<=`` this.
    """
    r = np.asarray(radius, dtype=np.float64)
    chord = 2 * np.sin((0.5 * r) * _DEG2RAD)
    return np.asarray(chord * chord, dtype=np.float64)


def _squared_distance(
    ax: FloatArray, ay: FloatArray, az: FloatArray, a_idx: IntArray, xyz: FloatArray, s_pos: IntArray
) -> FloatArray:
    """``(dx*dx + dy*dy) + dz*dz`` between centres ``a_idx`` and sorted sources ``s_pos``.

    The order of scipy's KD-tree sum, so decisions at the boundary are bit-identical.
    """
    d2 = ax[a_idx]
    d2 -= xyz[0][s_pos]
    d2 *= d2
    t = ay[a_idx]
    t -= xyz[1][s_pos]
    t *= t
    d2 += t
    t = az[a_idx]
    t -= xyz[2][s_pos]
    t *= t
    d2 += t
    return d2


def _separation(
    ax: FloatArray, ay: FloatArray, az: FloatArray, bx: FloatArray, by: FloatArray, bz: FloatArray
) -> FloatArray:
    """Angular distance (deg) of unit vectors: ``atan2(|a x b|, a . b)``."""
    cx = ay * bz - az * by
    cy = az * bx - ax * bz
    cz = ax * by - ay * bx
    return np.degrees(np.arctan2(np.sqrt(cx * cx + cy * cy + cz * cz), ax * bx + ay * by + az * bz))


def cone_pairs(
    catalog: Catalog, ra: npt.ArrayLike, dec: npt.ArrayLike, radius: npt.ArrayLike
) -> tuple[IntArray, IntArray, FloatArray]:
    """Every (centre, source) pair closer than the centre's radius.

    Parameters
    ----------
    catalog
        The catalog to search.
    ra, dec
        Centres (deg), 1-D arrays of one length.
    radius
        Search radius per centre (deg, >= 0), or one radius for all.

    Returns
    -------
    alert_idx, source_idx
        Index of the centre and of the catalog source of each pair (int64).
    sep
        Separation of each pair (deg).

    Pairs come in no particular order (deterministic for given inputs).  They are
    exactly those of ``search_around_sky(SkyCoord(ra, dec), SkyCoord(catalog.ra,
    catalog.dec), radius)`` (see the module notes).

    Raises
    ------
    ValueError
        On arrays of different lengths, non-finite values, a negative radius
        or a declination outside [-90, 90].
    """
    ra_a = np.asarray(ra, dtype=np.float64).reshape(-1)
    dec_a = np.asarray(dec, dtype=np.float64).reshape(-1)
    if ra_a.shape != dec_a.shape:
        raise ValueError(f"ra and dec have different lengths ({ra_a.size} and {dec_a.size})")
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), ra_a.shape)
    if not (np.isfinite(ra_a).all() and np.isfinite(dec_a).all() and np.isfinite(rad).all()):
        raise ValueError("ra, dec and radius must be finite")
    if (rad < 0).any():
        raise ValueError("radius must be >= 0 deg")
    if (np.abs(dec_a) > 90).any():
        raise ValueError("dec must be within [-90, 90] deg")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if ra_a.size == 0 or len(catalog) == 0:
        return empty
    ra_a = np.mod(ra_a, 360.0)  # as astropy's Longitude wraps
    ra_a[ra_a >= 360.0] = 0.0
    ax, ay, az = unit_vectors(ra_a, dec_a)
    limit = chord2_limit(rad)
    orders = search_order(rad)
    rad_rad = np.radians(rad)
    X = catalog.sorted_xyz
    out_a: list[IntArray] = []
    out_s: list[IntArray] = []
    out_d: list[FloatArray] = []
    for k in np.unique(orders).tolist():
        sel = np.flatnonzero(orders == k).astype(np.int64)
        for a_idx, s_pos, certain in _candidates(catalog, ax, ay, az, rad_rad, sel, int(k)):
            d2 = _squared_distance(ax, ay, az, a_idx, X, s_pos)
            if not certain:
                keep = d2 <= limit[a_idx]
                a_idx, s_pos, d2 = a_idx[keep], s_pos[keep], d2[keep]
            out_a.append(a_idx)
            out_s.append(s_pos)
            out_d.append(d2)
    if not out_a:
        return empty
    a_idx = np.concatenate(out_a)
    s_pos = np.concatenate(out_s)
    sep = _chord_to_deg(np.concatenate(out_d))
    wide = np.flatnonzero(sep > 90.0)  # the chord formula loses precision towards 180 deg
    if wide.size:
        w_a, w_s = a_idx[wide], s_pos[wide]
        sep[wide] = _separation(ax[w_a], ay[w_a], az[w_a], X[0][w_s], X[1][w_s], X[2][w_s])
    return a_idx, catalog.sorted_index[s_pos], sep


def _chord_to_deg(d2: FloatArray) -> FloatArray:
    """Angle (deg) subtended by chords of squared length ``d2`` (accurate below ~90 deg); overwrites ``d2``."""
    np.sqrt(d2, out=d2)
    d2 *= 0.5
    np.minimum(d2, 1.0, out=d2)
    np.arcsin(d2, out=d2)
    d2 *= 2.0 * 180.0 / math.pi
    return d2


_CENTRE_CACHE: dict[int, FloatArray] = {}
_CACHE_MAX_ORDER = DENSE_INDEX_MAX_ORDER  # pixel centres cached up to order 7: 196,608 x 3 float64 = 4.7 MB
_REFINE_THRESHOLDS = (72, 432, 3300)  # candidates of a centre above which its block is refined 1, 2, 3 orders


def _pixel_centres(order: int) -> FloatArray:
    """Unit vectors (3, npix) of the centres of all nested pixels at ``order`` (cached)."""
    cached = _CENTRE_CACHE.get(order)
    if cached is None:
        nside = 1 << order
        cached = np.ascontiguousarray(np.stack(hp.pix2vec(nside, np.arange(12 * nside * nside), nest=True)))
        _CENTRE_CACHE[order] = cached
    return cached


def _ranges(catalog: Catalog, cells: IntArray, order: int) -> tuple[IntArray, IntArray]:
    """Sorted-position ranges ``[lo, hi)`` of the sources in nested pixels ``cells`` (>= 0) at ``order``.

    Up to :data:`DENSE_INDEX_MAX_ORDER` a table lookup; finer, a binary search,
    only for the pixels whose parent at that order holds sources.
    """
    if order <= DENSE_INDEX_MAX_ORDER:
        starts = catalog.pixel_starts(order)
        return starts[cells].astype(np.int64), starts[cells + 1].astype(np.int64)
    starts = catalog.pixel_starts(DENSE_INDEX_MAX_ORDER)
    flat = cells.reshape(-1)
    parent = flat >> (2 * (order - DENSE_INDEX_MAX_ORDER))
    lo = starts[parent].astype(np.int64)
    hi = lo.copy()
    busy = np.flatnonzero(starts[parent + 1] > lo)
    if busy.size:
        shift = 2 * (INDEX_ORDER - order)
        pixels = catalog.sorted_pixels
        lo[busy] = np.searchsorted(pixels, flat[busy] << shift, side="left")
        hi[busy] = np.searchsorted(pixels, (flat[busy] + 1) << shift, side="left")
    return lo.reshape(cells.shape), hi.reshape(cells.shape)


def _candidates(
    catalog: Catalog,
    ax: FloatArray,
    ay: FloatArray,
    az: FloatArray,
    rad: FloatArray,
    sel: IntArray,
    k: int,
) -> list[tuple[IntArray, IntArray, bool]]:
    """Candidate pairs for the centres ``sel`` whose search order is ``k`` (-1: all pixels).

    Returns chunks ``(centre index, sorted source position, certain)`` of at
    most about :data:`_MAX_CANDIDATES` pairs; ``certain`` chunks come from
    pixels entirely inside the cones (by a margin) and need no exact test.

    The 3x3 block (or the 12 base pixels) of a centre with many candidates is
    refined: each pixel is split into its children 1 to 3 orders finer (up to
    order :data:`_CACHE_MAX_ORDER`), and only the children whose centre is
    within ``radius + 1.5 * max_pixrad`` of the cone's centre are kept.
    """
    m = sel.size
    if k < 0:
        order = 0
        cells = np.broadcast_to(np.arange(12, dtype=np.int64), (m, 12)).copy()
    else:
        order = k
        nside = 1 << k
        pix = hp.vec2pix(nside, ax[sel], ay[sel], az[sel], nest=True).astype(np.int64)
        neighbours = hp.get_all_neighbours(nside, pix, nest=True).astype(np.int64)  # (8, m), -1 where none
        cells = np.concatenate([pix[:, None], neighbours.T], axis=1)
        cells.sort(axis=1)
        cells[:, 1:][cells[:, 1:] == cells[:, :-1]] = -1  # a pixel listed twice (low orders) counts once
    valid = cells >= 0
    lo, hi = _ranges(catalog, np.where(valid, cells, 0), order)
    hi = np.where(valid, hi, lo)
    # Refinement depth per centre from its number of candidates: splitting the block into
    # 9 * 4**d children costs about as much per child as the exact test costs per candidate
    # and leaves roughly 1/2, 1/4, 1/8 of the candidates for d = 1, 2, 3.
    n_cand = (hi - lo).sum(axis=1)
    depth = np.searchsorted(np.asarray(_REFINE_THRESHOLDS), n_cand, side="left")
    depth = np.minimum(depth, max(_CACHE_MAX_ORDER - order, 0))
    keep = depth == 0
    ranges_c = [np.repeat(np.flatnonzero(keep), cells.shape[1])]
    ranges_lo, ranges_hi = [lo[keep].ravel()], [hi[keep].ravel()]
    inside_c: list[IntArray] = []
    inside_lo: list[IntArray] = []
    inside_hi: list[IntArray] = []
    for d in np.unique(depth[~keep]).tolist():
        rows = np.flatnonzero(depth == d)
        child_order = order + d
        n_children = 1 << (2 * d)
        parents = cells[rows]
        children = (parents[:, :, None] << (2 * d)) + np.arange(n_children, dtype=np.int64)
        children = children.reshape(rows.size, -1)
        ok = np.repeat(parents >= 0, n_children, axis=1)
        centres = _pixel_centres(child_order)
        ci = np.where(ok, children, 0)
        c = sel[rows]
        dot = ax[c][:, None] * centres[0][ci] + ay[c][:, None] * centres[1][ci] + az[c][:, None] * centres[2][ci]
        slack = 1.5 * hp.max_pixrad(1 << child_order)
        r = rad[c][:, None]
        touches = ok & (dot >= np.cos(np.minimum(r + slack, np.pi)))
        within = touches & (r - slack > 1e-7) & (dot > np.cos(np.maximum(r - slack - 1e-7, 0.0)))
        edge = touches & ~within
        for mask, out_c, out_lo, out_hi in (
            (edge, ranges_c, ranges_lo, ranges_hi),
            (within, inside_c, inside_lo, inside_hi),
        ):
            rr, cc = np.nonzero(mask)
            c_lo, c_hi = _ranges(catalog, children[rr, cc], child_order)
            out_c.append(rows[rr])
            out_lo.append(c_lo)
            out_hi.append(c_hi)
    out = [
        (a, s, False)
        for a, s in _expand(sel, np.concatenate(ranges_c), np.concatenate(ranges_lo), np.concatenate(ranges_hi))
    ]
    if inside_c:
        out += [
            (a, s, True)
            for a, s in _expand(sel, np.concatenate(inside_c), np.concatenate(inside_lo), np.concatenate(inside_hi))
        ]
    return out


def _expand(sel: IntArray, centre: IntArray, lo: IntArray, hi: IntArray) -> list[tuple[IntArray, IntArray]]:
    """Pairs (``sel[centre]``, each position in ``[lo, hi)``), in chunks of about :data:`_MAX_CANDIDATES`."""
    counts = hi - lo
    nonempty = counts > 0
    centre, lo, counts = centre[nonempty], lo[nonempty], counts[nonempty]
    out: list[tuple[IntArray, IntArray]] = []
    cum = np.cumsum(counts)
    start = 0
    while start < counts.size:
        base = int(cum[start - 1]) if start else 0
        stop = max(int(np.searchsorted(cum, base + _MAX_CANDIDATES, side="right")), start + 1)
        c = counts[start:stop]
        total = int(c.sum())
        a_rep = np.repeat(sel[centre[start:stop]], c)
        offsets = np.repeat(lo[start:stop] - (np.cumsum(c) - c), c)
        out.append((a_rep, offsets + np.arange(total, dtype=np.int64)))
        start = stop
    return out


# --------------------------------------------------------------------------- region geometry


def gaussian_radius(radius: float, containment: float, level: float = REGION_LEVEL) -> float:
    """Radius (deg) at ``level`` of a 2D Gaussian whose radius at ``containment`` is ``radius`` (deg).

    ``r_p = sigma * sqrt(-2 ln(1 - p))``.
    """
    return radius * gaussian_radius_scale(containment, level)


@dataclass(frozen=True)
class _Regions:
    """Per-alert geometry of a batch (arrays aligned with the alerts given)."""

    kind: IntArray  # _KIND_*
    ra: FloatArray
    dec: FloatArray
    sigma_major: FloatArray  # deg (Gaussian kinds)
    sigma_minor: FloatArray
    pa: FloatArray  # deg east of north
    extent: FloatArray  # deg: farthest point of the 90 % region from the position
    normals: FloatArray  # (n, max_corners, 3) great-circle edge normals oriented inwards (polygons)
    assumed: BoolArray  # containment not stated, 90 % assumed


def _regions(regions: Sequence[Region]) -> _Regions:
    n = len(regions)
    kind = np.zeros(n, np.int64)
    ra = np.zeros(n)
    dec = np.zeros(n)
    sa = np.zeros(n)
    sb = np.zeros(n)
    pa = np.zeros(n)
    extent = np.zeros(n)
    assumed = np.zeros(n, bool)
    corners = [r.corners for r in regions if isinstance(r, Rectangle)]
    max_c = max((len(c) for c in corners), default=0)
    normals = np.zeros((n, max_c, 3))
    for i, r in enumerate(regions):
        ra[i], dec[i] = r.ra, r.dec
        if isinstance(r, Circle):
            kind[i] = _KIND_GAUSS
            r90 = _circle_radius90(r)
            assumed[i] = r90 is None
            radius90 = r.radius if r90 is None else r90
            sa[i] = sb[i] = radius90 / _K90
            extent[i] = radius90
        elif isinstance(r, Ellipse):
            kind[i] = _KIND_GAUSS
            p = REGION_LEVEL if r.containment is None or not 0.0 < r.containment < 1.0 else r.containment
            assumed[i] = p is not r.containment
            k = math.sqrt(-2.0 * math.log(1.0 - p))
            sa[i], sb[i], pa[i] = r.semi_major / k, r.semi_minor / k, r.position_angle
            extent[i] = max(sa[i], sb[i]) * _K90
        elif isinstance(r, Rectangle):
            kind[i] = _KIND_POLYGON
            edge_normals, extent[i] = _polygon(r)
            normals[i, : len(edge_normals)] = edge_normals
        else:
            kind[i] = _KIND_POINT
    return _Regions(kind, ra, dec, sa, sb, pa, extent, normals, assumed)


def _circle_radius90(c: Circle) -> float | None:
    """The circle's 90 % radius (deg): stated, or scaled from its containment; ``None``: containment not stated."""
    if c.containment is not None and math.isclose(c.containment, REGION_LEVEL):
        return c.radius
    for other in c.other_radii:
        if math.isclose(other.containment, REGION_LEVEL):
            return other.radius
    if c.containment is None or not 0.0 < c.containment < 1.0:
        return None
    return gaussian_radius(c.radius, c.containment)


def _polygon(r: Rectangle) -> tuple[FloatArray, float]:
    """Inward edge normals (one per edge, padded later with zeros) and the farthest corner (deg)."""
    cra = np.array([c[0] for c in r.corners], dtype=np.float64)
    cdec = np.array([c[1] for c in r.corners], dtype=np.float64)
    vx, vy, vz = unit_vectors(cra, cdec)
    v = np.stack([vx, vy, vz], axis=1)
    normals = np.cross(v, np.roll(v, -1, axis=0))
    inside = v.sum(axis=0)
    normals *= np.sign(normals @ inside)[:, None]
    ax, ay, az = unit_vectors(r.ra, r.dec)
    far = float(np.max(_separation(np.full(len(vx), ax), np.full(len(vx), ay), np.full(len(vx), az), vx, vy, vz)))
    return normals, far


def _tangent_offsets(
    ra: FloatArray, dec: FloatArray, sx: FloatArray, sy: FloatArray, sz: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Offsets (deg) east and north of points ``s`` from centres ``(ra, dec)`` (deg), and the separation (deg).

    Azimuthal equidistant projection: the offset vector has the length of the
    true separation and the direction of the position angle.
    """
    r = np.radians(ra)
    d = np.radians(dec)
    sin_r, cos_r, sin_d, cos_d = np.sin(r), np.cos(r), np.sin(d), np.cos(d)
    east = -sin_r * sx + cos_r * sy
    north = -sin_d * cos_r * sx - sin_d * sin_r * sy + cos_d * sz
    radial = cos_d * cos_r * sx + cos_d * sin_r * sy + sin_d * sz
    t = np.hypot(east, north)
    sep = np.degrees(np.arctan2(t, radial))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(t > 0, sep / t, 0.0)
    return east * scale, north * scale, sep


def _mahalanobis2(east: FloatArray, north: FloatArray, a: FloatArray, b: FloatArray, pa: FloatArray) -> FloatArray:
    """``(u/a)^2 + (v/b)^2`` for offsets (deg) in an ellipse of semi-axes ``a, b`` (deg), major axis at ``pa``."""
    p = np.radians(pa)
    s, c = np.sin(p), np.cos(p)
    along = east * s + north * c
    across = east * c - north * s
    with np.errstate(divide="ignore", invalid="ignore"):
        m2 = (along / a) ** 2 + (across / b) ** 2
    # a degenerate (zero) axis: only offsets exactly on the other axis are inside
    return np.asarray(np.where(np.isnan(m2), np.inf, m2), dtype=np.float64)


# --------------------------------------------------------------------------- the annotator


@dataclass(frozen=True)
class _PairResult:
    """Matches of one catalog for a batch, as aligned arrays (alert index into the batch)."""

    alert: IntArray
    source: IntArray
    sep: FloatArray
    in_region: npt.NDArray[np.int8]  # 1 / 0 / -1 (None)
    containment: FloatArray  # NaN: None
    in_error: npt.NDArray[np.int8]  # 1 / 0 / -1 (None)


class CatalogAnnotator:
    """Matches alert localizations against local catalogs.

    Parameters
    ----------
    catalogs
        The loaded catalogs (names must be unique).
    max_matches_per_catalog
        Matches kept per alert and catalog, nearest first (sky maps: most
        probable first); the total is in the annotation's ``n_<catalog>``
        property.

    Notes
    -----
    Each alert gets one :class:`~broker.model.Annotation` (``annotator="catalogs"``)
    whose matches are sorted by catalog name, then separation.  Properties:
    ``n_<catalog>`` (sources matched, before the cap) for every catalog
    searched; ``skipped_<catalog>`` (reason) when the region exceeds the
    catalog's ``max_region_radius``; ``region_radius_90_deg`` (farthest extent
    of the 90 % region) and ``region_containment_assumed`` (no containment
    stated, 90 % assumed) for regions.  Alerts with a sky map are matched
    with :func:`annotators.skymap.match_catalog_skymap` at the 90 % level.
    Alerts with no localization get status ``skipped``.
    """

    name = "catalogs"
    version = "1.0"
    needs: Need = "localization"
    adds = "catalog sources inside the alert's 90% region or whose own error region holds the alert position"

    def __init__(self, catalogs: Sequence[Catalog], max_matches_per_catalog: int = 50) -> None:
        names = [c.name for c in catalogs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"catalog name(s) given twice: {', '.join(dupes)}")
        if max_matches_per_catalog < 1:
            raise ValueError("max_matches_per_catalog must be >= 1")
        self.catalogs: tuple[Catalog, ...] = tuple(sorted(catalogs, key=lambda c: c.name))
        self.max_matches_per_catalog = max_matches_per_catalog

    def annotate(self, alerts: Sequence[Alert]) -> list[Annotation | None]:
        """One annotation per alert (see the class notes)."""
        matches: list[list[CatalogMatch]] = [[] for _ in alerts]
        props: list[dict[str, PropertyValue]] = [{} for _ in alerts]
        region_idx = [i for i, a in enumerate(alerts) if a.skymap is None and a.region is not None]
        if region_idx:
            self._annotate_regions(alerts, region_idx, matches, props)
        for i, a in enumerate(alerts):
            if a.skymap is not None:
                self._annotate_skymap(a.skymap, a.messenger, matches[i], props[i])
        out: list[Annotation | None] = []
        for i, a in enumerate(alerts):
            if a.skymap is None and a.region is None:
                out.append(Annotation(self.name, self.version, status="skipped", reason="alert has no localization"))
                continue
            out.append(Annotation(self.name, self.version, matches=tuple(matches[i]), properties=props[i]))
        return out

    def _annotate_regions(
        self,
        alerts: Sequence[Alert],
        idx: list[int],
        matches: list[list[CatalogMatch]],
        props: list[dict[str, PropertyValue]],
    ) -> None:
        regions = _regions([r for i in idx if (r := alerts[i].region) is not None])
        for j, i in enumerate(idx):
            if regions.kind[j] != _KIND_POINT:
                props[i]["region_radius_90_deg"] = float(regions.extent[j])
                props[i]["region_containment_assumed"] = bool(regions.assumed[j])
        messengers = np.array([alerts[i].messenger for i in idx])
        for cat in self.catalogs:
            served = np.isin(messengers, cat.spec.serves)
            if not cat.has_errors:
                served &= regions.kind != _KIND_POINT
            limit = cat.spec.max_region_radius
            if limit is not None:
                too_big = served & (regions.extent > limit)
                for j in np.flatnonzero(too_big).tolist():
                    props[idx[j]][f"skipped_{cat.name}"] = (
                        f"region extends {regions.extent[j]:.3g} deg, beyond max_region_radius {limit:g} deg"
                    )
                served &= ~too_big
            sub = np.flatnonzero(served).astype(np.int64)
            if sub.size == 0:
                continue
            res = _match_regions(cat, regions, sub)
            counts = np.bincount(res.alert, minlength=len(idx))
            for j in sub.tolist():
                props[idx[j]][f"n_{cat.name}"] = int(counts[j])
            self._emit(cat, res, idx, matches)

    def _emit(self, cat: Catalog, res: _PairResult, idx: list[int], matches: list[list[CatalogMatch]]) -> None:
        """Append the nearest ``max_matches_per_catalog`` matches of each alert (pairs sorted by alert, separation)."""
        if res.alert.size == 0:
            return
        starts = np.searchsorted(res.alert, res.alert, side="left")
        rank = np.arange(res.alert.size) - starts
        sel = np.flatnonzero(rank < self.max_matches_per_catalog)
        src = res.source[sel]
        # numpy -> Python once per column (per-element indexing of numpy arrays is what costs here)
        columns = zip(
            res.alert[sel].tolist(),
            src.tolist(),
            cat.source_id[src].tolist(),
            cat.ra[src].tolist(),
            cat.dec[src].tolist(),
            res.sep[sel].tolist(),
            res.in_region[sel].tolist(),
            res.in_error[sel].tolist(),
            res.containment[sel].tolist(),
            (cat.distance[src] if cat.distance is not None else np.full(src.size, np.nan)).tolist(),
            strict=True,
        )
        name = cat.name
        for a, s, sid, ra, dec, sep, in_region, in_error, containment, distance in columns:
            matches[idx[a]].append(
                CatalogMatch(
                    catalog=name,
                    source_id=str(sid),
                    ra=ra,
                    dec=dec,
                    separation=sep,
                    source_in_region=None if in_region < 0 else bool(in_region),
                    alert_in_source_error=None if in_error < 0 else bool(in_error),
                    containment=None if math.isnan(containment) else containment,
                    distance=distance if math.isfinite(distance) else None,
                    properties=cat.properties_of(s),
                )
            )

    def _annotate_skymap(
        self, skymap: SkyMap, messenger: Messenger, out: list[CatalogMatch], props: dict[str, PropertyValue]
    ) -> None:
        from annotators.skymap import match_catalog_skymap  # sibling module; imported when first needed

        for cat in self.catalogs:
            if messenger not in cat.spec.serves:
                continue
            found, total = match_catalog_skymap(cat, skymap, level=REGION_LEVEL, limit=self.max_matches_per_catalog)
            props[f"n_{cat.name}"] = total
            out.extend(found)


def _opt_float(values: FloatArray | None, i: int) -> float | None:
    if values is None:
        return None
    v = float(values[i])
    return v if math.isfinite(v) else None


def _match_regions(cat: Catalog, regions: _Regions, sub: IntArray) -> _PairResult:
    """Vectorised shape tests of catalog ``cat`` against the alerts ``sub`` of a batch."""
    search = regions.extent[sub] + (cat.max_error if cat.has_errors else 0.0)
    a_loc, src, _ = cone_pairs(cat, regions.ra[sub], regions.dec[sub], search)
    alert = sub[a_loc]
    n = alert.size
    x, y, z = unit_vectors(cat.ra[src], cat.dec[src])
    east, north, sep = _tangent_offsets(regions.ra[alert], regions.dec[alert], x, y, z)
    kind = regions.kind[alert]
    in_region = np.full(n, -1, np.int8)
    containment = np.full(n, np.nan)
    gauss = kind == _KIND_GAUSS
    if gauss.any():
        m2 = _mahalanobis2(
            east[gauss],
            north[gauss],
            regions.sigma_major[alert[gauss]],
            regions.sigma_minor[alert[gauss]],
            regions.pa[alert[gauss]],
        )
        containment[gauss] = -np.expm1(-0.5 * m2)
        in_region[gauss] = containment[gauss] <= REGION_LEVEL
    poly = kind == _KIND_POLYGON
    if poly.any():
        normals = regions.normals[alert[poly]]  # (m, corners, 3)
        s = np.stack([x[poly], y[poly], z[poly]], axis=1)
        in_region[poly] = (np.einsum("mcj,mj->mc", normals, s) >= 0).all(axis=1)
    in_error = np.full(n, -1, np.int8)
    if cat.err_semi_major is not None and cat.err_semi_minor is not None and cat.err_pa is not None:
        a = cat.err_semi_major[src]
        known = np.isfinite(a)
        ax, ay, az = unit_vectors(regions.ra[alert], regions.dec[alert])
        e2, n2, _ = _tangent_offsets(cat.ra[src], cat.dec[src], ax, ay, az)
        m2 = _mahalanobis2(e2, n2, a, cat.err_semi_minor[src], cat.err_pa[src])
        in_error[known] = m2[known] <= 1.0
    keep = (in_region == 1) | (in_error == 1)
    order = np.lexsort((src[keep], sep[keep], alert[keep]))
    sel = np.flatnonzero(keep)[order]
    return _PairResult(alert[sel], src[sel], sep[sel], in_region[sel], containment[sel], in_error[sel])

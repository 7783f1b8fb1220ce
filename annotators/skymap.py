# SPDX-License-Identifier: Apache-2.0
"""Sky-map machinery: cross-matching points, credible regions, galaxy ranking.

Everything here works on a multi-order HEALPix :class:`~broker.model.SkyMap`
(NUNIQ indices, nested scheme, probability density in sr^-1) and is
vectorised with numpy.  The numbers are those of ``ligo.skymap``:

* :func:`crossmatch` gives, per point, the searched probability, searched area
  (deg^2) and probability density (sr^-1) exactly as
  ``ligo.skymap.postprocess.crossmatch.crossmatch`` computes
  ``searched_prob``, ``searched_area`` and ``probdensity``;
* :func:`credible_regions` gives the area of the smallest region holding each
  credible level as ``crossmatch``'s ``contour_areas`` (linear interpolation
  of the cumulative area against the cumulative probability, see
  ``ligo.skymap.postprocess.util.interp_greedy_credible_levels``), together
  with the region as a normalized MOC;
* :func:`rank_galaxies` ranks galaxies by the posterior density per unit
  volume of a 3D sky map, as the LVK user guide ("Sky Localization", "Galaxy
  cross matching") does.

``ligo.skymap`` itself is not used (it is a test and benchmark dependency
only).

Search order
------------
The pixels are searched by descending probability density.  Ties are broken as
``numpy.flipud(numpy.sort(table, order="PROBDENSITY"))`` breaks them in
``ligo.skymap`` for a table whose first column is ``UNIQ``: numpy uses the
unspecified fields, in dtype order, to break ties, so among pixels of equal
density the one with the larger NUNIQ index comes first.  The cumulative
probability up to and including a pixel is that pixel's *greedy credible
level* (``ligo.skymap.postprocess.util.find_greedy_credible_levels``).

Credible-region membership
--------------------------
A pixel belongs to the credible region at level ``L`` when its greedy credible
level is ``<= L`` (the LVK user guide's ``credible_levels <= 0.9``).  A point
is inside the region exactly when its searched probability is ``<= L``, so the
MOC, ``CatalogMatch.source_in_region`` and the galaxy counts agree.  The MOC
thus holds slightly *less* than ``L``; its area is at most the reported
(interpolated) area, which is less than the MOC's area plus the area of the
next pixel in search order.  When the single most probable pixel already holds
more than ``L`` the MOC is empty while the interpolated area is not.

Caching
-------
:func:`skymap_index` builds the per-map :class:`SkyMapIndex` (one sort, the
cumulative arrays and a pixel lookup table) once and memoises it by the
identity of the :class:`SkyMap` object (a bounded LRU of weak references, see
:func:`skymap_index`), so the sky-map annotator and the catalog annotators
annotating the same alert sort the map once.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from broker.annotate import Need
from broker.model import Alert, Annotation, CatalogMatch, CredibleRegion, PropertyValue, SkyMap

__all__ = [
    "CatalogLike",
    "GalaxyRanking",
    "SkyMapAnnotator",
    "SkyMapIndex",
    "SkymapCrossmatch",
    "clear_skymap_index_cache",
    "credible_regions",
    "crossmatch",
    "dp_dv",
    "match_catalog_skymap",
    "normalize_moc",
    "rank_galaxies",
    "skymap_index",
    "uniq_to_order_ipix",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_SR_TO_DEG2 = float(np.square(180.0 / np.pi))  # deg^2 per sr, computed as ligo.skymap does
_FULL_SKY_DEG2 = 4 * 180**2 / np.pi  # ligo.skymap's ``right`` for contour areas beyond the total probability
_MAX_ORDER = 29
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_DENSE_MAX_ORDER = 7  # direct lookup table up to 196 608 entries (1.5 MiB); binary search beyond
DEFAULT_LEVELS: tuple[float, float] = (0.5, 0.9)
REGION_LEVEL = 0.9
"""Containment of the region ``CatalogMatch.source_in_region`` refers to."""


class CatalogLike(Protocol):
    """What this module needs from a catalog (``annotators.catalogs.Catalog`` has it).

    Attributes
    ----------
    name
        Catalog name, stored in every :class:`~broker.model.CatalogMatch`.
    ra, dec
        Source positions (deg, ICRS), float64 arrays.
    source_id
        Source names, a numpy string array.
    distance
        Luminosity distance of each source (Mpc; NaN when unknown), or
        ``None`` for catalogs without distances.
    """

    @property
    def name(self) -> str: ...

    @property
    def ra(self) -> FloatArray: ...

    @property
    def dec(self) -> FloatArray: ...

    @property
    def source_id(self) -> npt.NDArray[np.str_]: ...

    @property
    def distance(self) -> FloatArray | None: ...

    def properties_of(self, i: int) -> dict[str, PropertyValue]:
        """The matched-property columns of source ``i``."""
        ...

    def __len__(self) -> int: ...


# --------------------------------------------------------------------------- NUNIQ helpers


def uniq_to_order_ipix(uniq: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Split NUNIQ indices into HEALPix order and nested pixel index.

    Exact in integer arithmetic for every order up to 29 (a float ``log2``
    alone rounds the last pixels of high orders up to the next order).

    Parameters
    ----------
    uniq
        NUNIQ pixel indices (``4 * 4**order + ipix``), >= 4.

    Returns
    -------
    order, ipix
        int64 arrays of the same shape.
    """
    u = np.asarray(uniq, dtype=np.int64)
    order = (np.log2(u.astype(np.float64)).astype(np.int64) - 2) // 2
    order = np.clip(order, 0, _MAX_ORDER)
    # Correct the float estimate: uniq lies in [4 * 4**order, 16 * 4**order).
    order = np.where(u < (np.int64(4) << (2 * order)), order - 1, order)
    order = np.where((order < _MAX_ORDER) & (u >= (np.int64(16) << (2 * order))), order + 1, order)
    ipix = u - (np.int64(4) << (2 * order))
    return order, ipix


def _pixel_area_sr(order: IntArray) -> FloatArray:
    """Area (sr) of pixels of the given orders: pi / (3 * 4**order), exactly as ligo.skymap's ``uniq2pixarea``."""
    return np.ldexp(np.pi / 3.0, (-2 * order).astype(np.int32))


def normalize_moc(uniq: npt.ArrayLike) -> IntArray:
    """Normalize a multi-order coverage map.

    Every complete set of 4 sibling pixels is replaced by their parent,
    recursively from the deepest order up to order 0; the result is sorted.

    Parameters
    ----------
    uniq
        NUNIQ indices of non-overlapping pixels (duplicates are dropped; a
        pixel together with one of its descendants is not allowed).

    Returns
    -------
    numpy.ndarray
        Sorted, unique NUNIQ indices (int64) of the normalized MOC.
    """
    u = np.unique(np.asarray(uniq, dtype=np.int64))
    if u.size == 0:
        return u
    order, ipix = uniq_to_order_ipix(u)
    out: list[IntArray] = []
    carry = np.empty(0, dtype=np.int64)  # parents merged at the order below, expressed at this order
    for o in range(int(order.max()), -1, -1):
        cur = np.sort(np.concatenate((ipix[order == o], carry)))
        if o == 0 or cur.size == 0:
            out.append(cur + (np.int64(4) << (2 * o)))
            carry = np.empty(0, dtype=np.int64)
            continue
        parent = cur >> 2
        _, counts = np.unique(parent, return_counts=True)  # parent is sorted: groups are contiguous
        complete = np.repeat(counts, counts) == 4
        out.append(cur[~complete] + (np.int64(4) << (2 * o)))
        carry = parent[complete][::4]
    return np.sort(np.concatenate(out))


# --------------------------------------------------------------------------- per-map index


@dataclass(frozen=True, eq=False)
class SkyMapIndex:
    """Everything a sky map's searches need, computed once per map.

    All ``*_sorted`` and ``cum_*`` arrays are in search order (descending
    probability density, ties by descending NUNIQ; see the module notes).

    Attributes
    ----------
    perm
        Row of the sky map at each search position (int64).
    uniq_sorted
        NUNIQ index at each search position.
    probdensity_sorted
        Probability density at each search position (sr^-1).
    area_sr_sorted
        Pixel area at each search position (sr).
    cum_prob
        Cumulative probability up to and including each search position: the
        greedy credible level of that pixel (dimensionless).
    cum_area
        Cumulative area up to and including each search position (deg^2).
    max_order
        Deepest HEALPix order of the map.
    dense
        For shallow maps (``max_order <= 7``): the search position of the
        pixel holding each nested pixel at ``max_order`` (-1 where the map has
        none), a direct lookup table; ``None`` for deeper maps, which use a
        binary search of ``lookup_start``.
    lookup_start
        First nested pixel index at ``max_order`` of every pixel, sorted (int64).
    lookup_end
        One past the last nested pixel index at ``max_order`` of the same pixels.
    lookup_rank
        Search position of the same pixels.
    """

    perm: IntArray
    uniq_sorted: IntArray
    probdensity_sorted: FloatArray
    area_sr_sorted: FloatArray
    cum_prob: FloatArray
    cum_area: FloatArray
    max_order: int
    dense: IntArray | None
    lookup_start: IntArray
    lookup_end: IntArray
    lookup_rank: IntArray

    @classmethod
    def build(cls, skymap: SkyMap) -> SkyMapIndex:
        """Sort ``skymap`` once and build its cumulative arrays and lookup table."""
        uniq = np.asarray(skymap.uniq, dtype=np.int64)
        density = np.asarray(skymap.probdensity, dtype=np.float64)
        # Ascending by (density, uniq), then reversed: numpy's structured sort + flipud in ligo.skymap.
        perm = np.lexsort((uniq, density))[::-1].astype(np.int64)
        uniq_s = uniq[perm]
        dens_s = density[perm]
        order, ipix = uniq_to_order_ipix(uniq_s)
        area_s = _pixel_area_sr(order)
        cum_prob = np.cumsum(dens_s * area_s)
        cum_area = np.cumsum(area_s) * _SR_TO_DEG2
        max_order = int(order.max())
        shift = 2 * (max_order - order)
        start = ipix << shift
        lookup = np.argsort(start)  # starts are unique in a valid MOC; ligo.skymap sorts them the same way
        dense = None
        if max_order <= _DENSE_MAX_ORDER:
            dense = np.full(12 << (2 * max_order), -1, dtype=np.int64)
            span = np.int64(1) << shift
            dense[_ranges_to_indices(start, span)] = np.repeat(np.arange(start.size, dtype=np.int64), span)
        return cls(
            perm=perm,
            uniq_sorted=uniq_s,
            probdensity_sorted=dens_s,
            area_sr_sorted=area_s,
            cum_prob=cum_prob,
            cum_area=cum_area,
            max_order=max_order,
            dense=dense,
            lookup_start=start[lookup],
            lookup_end=((ipix + 1) << shift)[lookup],
            lookup_rank=lookup.astype(np.int64),
        )

    def search_rank(self, ra_deg: npt.ArrayLike, dec_deg: npt.ArrayLike) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Search position of the pixel containing each point.

        Parameters
        ----------
        ra_deg, dec_deg
            Positions (deg, ICRS).

        Returns
        -------
        rank
            Search position of the containing pixel (int64).
        covered
            Whether the map has a pixel containing the point (a partial-sky
            map may not); ``rank`` is meaningless where this is false.
        """
        import healpy as hp

        ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec_deg, dtype=np.float64))
        if ra.size and (ra.min() < 0 or ra.max() >= 360.0):
            ra = np.mod(ra, 360.0)  # as astropy's Longitude wraps it
        theta = 0.5 * np.pi - np.deg2rad(dec)
        phi = np.deg2rad(ra)
        pix = np.asarray(hp.ang2pix(1 << self.max_order, theta, phi, nest=True), dtype=np.int64)
        if self.dense is not None:
            rank = self.dense[pix]
            covered = rank >= 0
            return np.where(covered, rank, 0), covered
        k = np.searchsorted(self.lookup_start, pix, side="right") - 1
        kk = np.clip(k, 0, None)
        covered = (k >= 0) & (pix < self.lookup_end[kk])
        return self.lookup_rank[kk], covered

    def n_in_region(self, level: float) -> int:
        """Number of pixels whose greedy credible level is <= ``level`` (a prefix of the search order)."""
        return int(np.searchsorted(self.cum_prob, level, side="right"))

    def contour_area(self, levels: npt.ArrayLike) -> FloatArray:
        """Area (deg^2) of the smallest regions holding ``levels``, as ligo.skymap's ``contour_areas``."""
        xp = np.pad(self.cum_prob, (1, 0))
        fp = np.pad(self.cum_area, (1, 0))
        return np.asarray(np.interp(np.asarray(levels, dtype=np.float64), xp, fp, right=_FULL_SKY_DEG2))


def _ranges_to_indices(start: IntArray, span: IntArray) -> IntArray:
    """Concatenation of ``arange(start[i], start[i] + span[i])`` over ``i``, vectorised."""
    total = int(span.sum())
    offsets = np.cumsum(span) - span
    return np.repeat(start - offsets, span) + np.arange(total, dtype=np.int64)


_CACHE_SIZE = 16
_cache: OrderedDict[int, tuple[weakref.ref[SkyMap], SkyMapIndex]] = OrderedDict()
_cache_lock = threading.Lock()


def skymap_index(skymap: SkyMap) -> SkyMapIndex:
    """The :class:`SkyMapIndex` of ``skymap``, built once and memoised.

    :class:`SkyMap` is unhashable (it compares arrays), so the memo is keyed by
    ``id(skymap)`` and holds a weak reference to the map to tell a live hit
    from a recycled id; it keeps the 16 most recently used maps.  The arrays of
    a :class:`SkyMap` must not be modified after its index was built.
    Thread-safe.
    """
    key = id(skymap)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0]() is skymap:
            _cache.move_to_end(key)
            return hit[1]
    index = SkyMapIndex.build(skymap)
    with _cache_lock:
        _cache[key] = (weakref.ref(skymap), index)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return index


def clear_skymap_index_cache() -> None:
    """Forget every memoised :class:`SkyMapIndex`."""
    with _cache_lock:
        _cache.clear()


def _index(skymap: SkyMap, index: SkyMapIndex | None) -> SkyMapIndex:
    return skymap_index(skymap) if index is None else index


# --------------------------------------------------------------------------- cross-match


@dataclass(frozen=True, eq=False)
class SkymapCrossmatch:
    """Per-point results of :func:`crossmatch` (arrays of the points' length).

    Attributes
    ----------
    searched_prob
        Probability of the smallest credible region containing the point: the
        greedy credible level of its pixel, in [0, 1] (NaN where not covered).
    searched_area
        Area of that region (deg^2; NaN where not covered).
    probdensity
        Probability density at the point (sr^-1; NaN where not covered).
    pixel
        Row of the sky map holding the point (int64; -1 where not covered).
    covered
        Whether the map has a pixel containing the point.
    """

    searched_prob: FloatArray
    searched_area: FloatArray
    probdensity: FloatArray
    pixel: IntArray
    covered: npt.NDArray[np.bool_]


def crossmatch(
    skymap: SkyMap, ra_deg: npt.ArrayLike, dec_deg: npt.ArrayLike, *, index: SkyMapIndex | None = None
) -> SkymapCrossmatch:
    """Cross-match points with a sky map, as ``ligo.skymap``'s ``crossmatch`` (2D part) does.

    Parameters
    ----------
    skymap
        The sky map.
    ra_deg, dec_deg
        Positions (deg, ICRS), scalars or arrays of one shape.
    index
        The map's index, if already at hand (default: :func:`skymap_index`).

    Returns
    -------
    SkymapCrossmatch
        Searched probability, searched area (deg^2), probability density
        (sr^-1) and pixel row of each point.  For points outside a partial-sky
        map the values are NaN (``ligo.skymap`` would return those of a
        neighbouring pixel there).

    Raises
    ------
    ValueError
        From healpy, when a declination is NaN or outside [-90, 90] deg.
    """
    idx = _index(skymap, index)
    rank, covered = idx.search_rank(ra_deg, dec_deg)
    nan = np.float64(np.nan)
    return SkymapCrossmatch(
        searched_prob=np.where(covered, idx.cum_prob[rank], nan),
        searched_area=np.where(covered, idx.cum_area[rank], nan),
        probdensity=np.where(covered, idx.probdensity_sorted[rank], nan),
        pixel=np.where(covered, idx.perm[rank], -1),
        covered=covered,
    )


# --------------------------------------------------------------------------- credible regions


def credible_regions(
    skymap: SkyMap, levels: Sequence[float] = DEFAULT_LEVELS, *, index: SkyMapIndex | None = None
) -> tuple[CredibleRegion, ...]:
    """Smallest credible regions of a sky map.

    Parameters
    ----------
    skymap
        The sky map.
    levels
        Credible levels, each in (0, 1].
    index
        The map's index, if already at hand.

    Returns
    -------
    tuple of CredibleRegion
        One per level, in the given order: ``area`` (deg^2) as ligo.skymap's
        ``contour_areas`` (interpolated between whole pixels), ``moc`` the
        normalized MOC of the pixels whose greedy credible level is
        ``<= level`` (see the module notes for how the two relate).

    Raises
    ------
    ValueError
        When a level is outside (0, 1].
    """
    lv = np.asarray(levels, dtype=np.float64)
    if np.any(~(lv > 0) | (lv > 1)):
        raise ValueError(f"credible levels must be in (0, 1], got {list(levels)}")
    idx = _index(skymap, index)
    areas = idx.contour_area(lv)
    return tuple(
        CredibleRegion(
            level=float(level),
            area=float(area),
            moc=normalize_moc(idx.uniq_sorted[: idx.n_in_region(float(level))]),
        )
        for level, area in zip(lv, areas, strict=True)
    )


# --------------------------------------------------------------------------- distances and galaxy ranking


def _distance_layers(skymap: SkyMap) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    """``(distmu, distsigma, distnorm)`` when the map has all three, each one value per pixel."""
    mu, sigma, norm = skymap.distmu, skymap.distsigma, skymap.distnorm
    n = skymap.uniq.shape
    if mu is None or sigma is None or norm is None or not (mu.shape == sigma.shape == norm.shape == n):
        return None
    return mu, sigma, norm


def _is_3d(skymap: SkyMap) -> bool:
    return _distance_layers(skymap) is not None


def dp_dv(skymap: SkyMap, pixel: npt.ArrayLike, distance: npt.ArrayLike) -> FloatArray:
    """Posterior probability density per unit volume of a 3D sky map.

    ``dP/dV = probdensity * distnorm * N(r; distmu, distsigma)`` with ``N`` the
    normal density, i.e. ``probdensity * conditional_pdf(r) / r**2`` in terms
    of ``ligo.skymap.distance.conditional_pdf`` (the LVK user guide's
    ``prob / pixarea * distnorm * norm(distmu, distsigma).pdf(r)``).

    Units: sr^-1 (probdensity) * Mpc^-2 (distnorm) * Mpc^-1 (normal density in
    r) = Mpc^-3 sr^-1, i.e. probability per unit volume ``dV = r^2 dr dOmega``
    with the solid angle in steradians: a density per Mpc^3 of Euclidean
    volume in luminosity distance (no cosmological correction).

    Parameters
    ----------
    skymap
        A 3D sky map (``distmu``, ``distsigma``, ``distnorm`` present).
    pixel
        Row of the map holding each point (e.g. ``SkymapCrossmatch.pixel``);
        negative rows give NaN.
    distance
        Luminosity distance of each point (Mpc).

    Returns
    -------
    numpy.ndarray
        dP/dV (Mpc^-3); NaN where the pixel or the distance is unknown, 0 in
        pixels without distance information (``distnorm`` 0, ``distmu`` inf).

    Raises
    ------
    ValueError
        When the map has no distance layers.
    """
    layers = _distance_layers(skymap)
    if layers is None:
        raise ValueError("the sky map has no distance layers (DISTMU, DISTSIGMA, DISTNORM)")
    distmu, distsigma, distnorm = layers
    pix = np.asarray(pixel, dtype=np.int64)
    r = np.asarray(distance, dtype=np.float64)
    ok = pix >= 0
    p = np.where(ok, pix, 0)
    mu = distmu[p]
    sigma = distsigma[p]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        gauss = np.exp(-0.5 * np.square((r - mu) / sigma)) * _INV_SQRT_2PI / sigma
        out = np.asarray(skymap.probdensity, dtype=np.float64)[p] * distnorm[p] * gauss
    out = np.where(np.isfinite(out), out, 0.0)
    return np.where(ok & np.isfinite(r), out, np.nan)


class GalaxyRanking(NamedTuple):
    """Result of :func:`rank_galaxies`.

    Attributes
    ----------
    indices
        Catalog rows, best first (int64).
    dp_dv
        dP/dV of those rows (Mpc^-3) when ranked by volume density; NaN when
        ranked by sky density (2D map or no distances).
    """

    indices: IntArray
    dp_dv: FloatArray


def rank_galaxies(
    skymap: SkyMap,
    ra: npt.ArrayLike,
    dec: npt.ArrayLike,
    dist: npt.ArrayLike | None,
    top_n: int | None = 20,
    *,
    level: float = REGION_LEVEL,
    index: SkyMapIndex | None = None,
    xmatch: SkymapCrossmatch | None = None,
) -> GalaxyRanking:
    """Rank galaxies by how likely they host the event, as the LVK user guide does.

    For a 3D map and known distances the key is :func:`dp_dv`; otherwise (2D
    map, or ``dist`` is ``None``) it is the sky probability density.  Only
    galaxies inside the ``level`` credible region (searched probability
    ``<= level``) are ranked and, when ranking by dP/dV, only those with a
    finite positive distance: galaxies of unknown distance are left out, not
    put last.  Ties keep catalog order.

    Parameters
    ----------
    skymap
        The sky map.
    ra, dec
        Galaxy positions (deg).
    dist
        Galaxy luminosity distances (Mpc; NaN unknown), or ``None``.
    top_n
        How many to return (``None``: all ranked galaxies).
    level
        Credible level of the region galaxies must lie in.
    index, xmatch
        The map's index and the galaxies' :func:`crossmatch`, if at hand.

    Returns
    -------
    GalaxyRanking
        ``(indices, dp_dv)``, best first.
    """
    xm = xmatch if xmatch is not None else crossmatch(skymap, ra, dec, index=index)
    inside = xm.covered & (xm.searched_prob <= level)
    if dist is not None and _is_3d(skymap):
        r = np.asarray(dist, dtype=np.float64)
        candidates = np.flatnonzero(inside & np.isfinite(r) & (r > 0))
        key = dp_dv(skymap, xm.pixel[candidates], r[candidates])
        values = key
    else:
        candidates = np.flatnonzero(inside)
        key = xm.probdensity[candidates]
        values = np.full(candidates.size, np.nan)
    best = np.argsort(-key, kind="stable")
    if top_n is not None:
        best = best[: max(top_n, 0)]
    return GalaxyRanking(indices=candidates[best].astype(np.int64), dp_dv=values[best])


# --------------------------------------------------------------------------- catalog matching


def _separation_deg(ra0: float, dec0: float, ra: FloatArray, dec: FloatArray) -> FloatArray:
    """Angular distance (deg) from one point to many (Vincenty formula, stable at all angles)."""
    lon0, lat0, lon, lat = np.deg2rad(ra0), np.deg2rad(dec0), np.deg2rad(ra), np.deg2rad(dec)
    dlon = lon - lon0
    sd, cd = np.sin(dlon), np.cos(dlon)
    s0, c0, s1, c1 = np.sin(lat0), np.cos(lat0), np.sin(lat), np.cos(lat)
    num = np.hypot(c1 * sd, c0 * s1 - s0 * c1 * cd)
    den = s0 * s1 + c0 * c1 * cd
    return np.asarray(np.rad2deg(np.arctan2(num, den)), dtype=np.float64)


def _opt(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _matches(
    catalog: CatalogLike,
    skymap: SkyMap,
    rows: IntArray,
    xm: SkymapCrossmatch,
    volume_density: FloatArray | None,
) -> list[CatalogMatch]:
    """CatalogMatch objects for catalog ``rows`` (``volume_density`` aligned with ``rows``)."""
    ra0, dec0 = skymap.max_position()
    ra = np.asarray(catalog.ra, dtype=np.float64)[rows]
    dec = np.asarray(catalog.dec, dtype=np.float64)[rows]
    sep = _separation_deg(ra0, dec0, ra, dec)
    dist = None if catalog.distance is None else np.asarray(catalog.distance, dtype=np.float64)[rows]
    prob = xm.searched_prob[rows]
    out: list[CatalogMatch] = []
    for j, i in enumerate(rows.tolist()):  # one object per matched source: the output is a list of objects
        out.append(
            CatalogMatch(
                catalog=catalog.name,
                source_id=str(catalog.source_id[i]),
                ra=float(ra[j]),
                dec=float(dec[j]),
                separation=float(sep[j]),
                source_in_region=bool(prob[j] <= REGION_LEVEL),
                containment=float(prob[j]),
                probdensity=float(xm.probdensity[i]),
                searched_area=float(xm.searched_area[i]),
                distance=None if dist is None else _opt(dist[j]),
                dp_dv=None if volume_density is None else _opt(volume_density[j]),
                properties=catalog.properties_of(i),
            )
        )
    return out


def match_catalog_skymap(
    catalog: CatalogLike,
    skymap: SkyMap,
    level: float = REGION_LEVEL,
    index: SkyMapIndex | None = None,
    limit: int | None = None,
) -> tuple[list[CatalogMatch], int]:
    """Catalog sources inside a sky map's credible region.

    Parameters
    ----------
    catalog
        The catalog.
    skymap
        The sky map.
    level
        Credible level of the region (sources with searched probability
        ``<= level`` are matched).
    index
        The map's index, if already at hand.
    limit
        Build at most this many matches (the most probable); ``None``: all.

    Returns
    -------
    matches : list of CatalogMatch
        Sorted by searched probability (most probable pixels first, then
        catalog order): ``containment`` = searched probability,
        ``probdensity`` (sr^-1), ``searched_area`` (deg^2), ``separation``
        (deg) from :meth:`SkyMap.max_position`, ``source_in_region`` = inside
        the 90 % region (always true at the default level), ``distance``
        (Mpc) when the catalog has distances, ``dp_dv`` (Mpc^-3) when it has
        and the map is 3D (``None`` for sources of unknown distance).
    total : int
        Number of sources inside the region (before ``limit``).
    """
    xm = crossmatch(skymap, catalog.ra, catalog.dec, index=index)
    inside = np.flatnonzero(xm.covered & (xm.searched_prob <= level))
    rows = inside[np.argsort(xm.searched_prob[inside], kind="stable")].astype(np.int64)
    total = int(rows.size)
    if limit is not None:
        rows = rows[:limit]
    density = None
    if catalog.distance is not None and _is_3d(skymap):
        density = dp_dv(skymap, xm.pixel[rows], np.asarray(catalog.distance, dtype=np.float64)[rows])
    return _matches(catalog, skymap, rows, xm, density), total


# --------------------------------------------------------------------------- the annotator


class SkyMapAnnotator:
    """Credible regions of an alert's sky map and the galaxies most likely to host it.

    Parameters
    ----------
    catalog
        Galaxy catalog to rank inside the 90 % region (optional).
    top_n
        Number of ranked galaxies kept as matches.

    Notes
    -----
    Per alert with a sky map, one :class:`~broker.model.Annotation` with the
    50 % and 90 % credible regions and the properties ``area_50_deg2``,
    ``area_90_deg2`` (deg^2), ``npix``, ``max_order``, ``has_distance``,
    ``max_prob_ra_deg``, ``max_prob_dec_deg`` (deg), ``distmean_mpc``,
    ``diststd_mpc`` (Mpc, when the map states them) and, with a catalog,
    ``galaxy_catalog``, ``n_galaxies_90`` (catalog galaxies inside the 90 %
    region, whatever their distance) and ``galaxy_ranking`` (``"dp_dv"`` or
    ``"probdensity"``, see :func:`rank_galaxies`); the matches are the
    ``top_n`` ranked galaxies, best first.  Alerts without a sky map get
    ``None``.
    """

    name: str = "skymap"
    version: str = "1.0"
    needs: Need = "skymap"
    adds: str = "50%/90% credible areas and MOCs of the sky map, and the galaxies ranked by dP/dV inside the 90% region"

    def __init__(self, catalog: CatalogLike | None = None, top_n: int = 20) -> None:
        if top_n < 0:
            raise ValueError(f"top_n must be >= 0, got {top_n}")
        self.catalog = catalog
        self.top_n = top_n

    def annotate(self, alerts: Sequence[Alert]) -> list[Annotation | None]:
        """Annotate a batch; ``None`` for alerts without a sky map."""
        return [None if a.skymap is None else self.annotate_skymap(a.skymap) for a in alerts]

    def annotate_skymap(self, skymap: SkyMap) -> Annotation:
        """The annotation of one sky map."""
        idx = skymap_index(skymap)
        regions = credible_regions(skymap, DEFAULT_LEVELS, index=idx)
        ra0, dec0 = skymap.max_position()
        props: dict[str, PropertyValue] = {
            "area_50_deg2": regions[0].area,
            "area_90_deg2": regions[1].area,
            "npix": int(skymap.uniq.size),
            "max_order": idx.max_order,
            "has_distance": _is_3d(skymap),
            "max_prob_ra_deg": ra0,
            "max_prob_dec_deg": dec0,
        }
        if skymap.distmean is not None:
            props["distmean_mpc"] = float(skymap.distmean)
        if skymap.diststd is not None:
            props["diststd_mpc"] = float(skymap.diststd)
        matches: tuple[CatalogMatch, ...] = ()
        if self.catalog is not None:
            matches = self._galaxies(self.catalog, skymap, idx, props)
        return Annotation(
            annotator=self.name,
            version=self.version,
            matches=matches,
            credible_regions=regions,
            properties=props,
        )

    def _galaxies(
        self, cat: CatalogLike, skymap: SkyMap, idx: SkyMapIndex, props: dict[str, PropertyValue]
    ) -> tuple[CatalogMatch, ...]:
        xm = crossmatch(skymap, cat.ra, cat.dec, index=idx)
        volume = cat.distance is not None and _is_3d(skymap)
        ranking = rank_galaxies(
            skymap, cat.ra, cat.dec, cat.distance, self.top_n, level=REGION_LEVEL, index=idx, xmatch=xm
        )
        props["galaxy_catalog"] = cat.name
        props["n_galaxies_90"] = int(np.count_nonzero(xm.covered & (xm.searched_prob <= REGION_LEVEL)))
        props["galaxy_ranking"] = "dp_dv" if volume else "probdensity"
        log.debug("skymap: %d galaxies of %s ranked", ranking.indices.size, cat.name)
        return tuple(_matches(cat, skymap, ranking.indices, xm, ranking.dp_dv if volume else None))

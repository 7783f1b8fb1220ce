# SPDX-License-Identifier: Apache-2.0
"""Footprints and spatial tests of ``broker.coincidence.spatial`` on real localizations.

References:

* ligo-raven's ``skymap_overlap_integral`` (the LVK implementation of the
  overlap integral I_Omega), on the real sky maps of
  ``tests/data/notices/igwn/skymaps`` read by ligo.skymap as RAVEN reads them,
  on rotated copies of them and on the Fermi GBM flat RING map;
* brute-force sums on fine HEALPix grids for the Fisher-von Mises and
  Gaussian densities of circles and ellipses;
* independent set operations for the 90 % region tests.

Tolerances.  Our footprint re-bins a map to order <= 8 and keeps 99.9 % of its
probability, so against RAVEN on the *native* map: 1 % for the self-overlap of
BAYESTAR maps, 3 % (or 0.01 absolute, for overlaps made in the 0.1 % tails)
for shifted copies and for the GBM map, and the density inside one order-8
pixel for points.  Against RAVEN on the *re-binned* map (the footprint written
out as a full-sky map) the formulas agree to rounding (1e-9).
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import healpy as hp
import numpy as np
import pytest
from astropy import units as u
from astropy.table import Column
from ligo.raven.search import skymap_overlap_integral
from ligo.skymap.io import read_sky_map
from scipy import integrate

import broker.coincidence.spatial as sp
from broker.coincidence.spatial import (
    FORMAT_VERSION,
    POINT_MATCH_RADIUS,
    Footprint,
    SpatialResult,
    compare,
    compare_many,
    fisher_kappa,
    footprint,
    region_footprint,
    skymap_footprint,
)
from broker.formats.skymap import decode_fits_skymap
from broker.model import Alert, Circle, Ellipse, Point, Rectangle, SkyMap
from tests.corpus import parsed_alerts

SKYMAPS = Path(__file__).parent / "data" / "notices" / "igwn" / "skymaps"
MOC_FILES = (
    "userguide_bayestar.multiorder.fits",
    "userguide_combined-ext.multiorder.fits",
    "gwcelery_MS220722v_bayestar.multiorder.fits",
    "gwcelery_rrt_small_area.fits",
    "gwcelery_swift_skymap.multiorder.fits",
)
GBM_FILE = "gwcelery_fermi_skymap.fits.gz"
BAYESTAR = MOC_FILES[:3]  # BAYESTAR maps: 19 200 pixels down to order 9-11, re-binned to order 8 or 7
EXACT = 1e-9


@dataclass(frozen=True)
class RealMap:
    """One real sky map: decoded by us, and read by ligo.skymap as RAVEN reads it."""

    name: str
    skymap: SkyMap
    fp: Footprint
    uniq: Any  # astropy Column, as in RAVEN
    probdensity: Any  # astropy Column with unit sr^-1, as in RAVEN


@pytest.fixture(scope="module")
def maps() -> dict[str, RealMap]:
    out = {}
    for name in MOC_FILES:
        path = SKYMAPS / name
        ours = decode_fits_skymap(path.read_bytes(), name)
        table = read_sky_map(str(path), moc=True)
        assert np.array_equal(np.asarray(table["UNIQ"]), ours.uniq)  # both readers see the same map
        assert np.array_equal(np.asarray(table["PROBDENSITY"], dtype=np.float64), ours.probdensity)
        out[name] = RealMap(name, ours, skymap_footprint(ours), table["UNIQ"], table["PROBDENSITY"])
    return out


@pytest.fixture(scope="module")
def gbm() -> tuple[SkyMap, Footprint, np.ndarray]:
    """The Fermi GBM map: ours, its footprint, and the flat RING probabilities RAVEN reads."""
    ours = decode_fits_skymap((SKYMAPS / GBM_FILE).read_bytes(), GBM_FILE)
    ring = hp.read_map(str(SKYMAPS / GBM_FILE), nest=False)
    return ours, skymap_footprint(ours), ring


def raven(*args: Any, **kwargs: Any) -> float:
    value = skymap_overlap_integral(*args, **kwargs)
    assert not isinstance(value, str), value
    return float(value)


def flat(fp: Footprint) -> np.ndarray:
    """A sky-map footprint as a full-sky flat NESTED probability map at its order."""
    assert fp.order is not None
    m = np.zeros(12 << (2 * fp.order))
    m[fp.ipix] = fp.prob
    return m


def as_moc_columns(fp: Footprint) -> tuple[Column, Column]:
    """A sky-map footprint as RAVEN's multi-order columns (UNIQ, PROBDENSITY [sr^-1]) of its kept pixels."""
    assert fp.order is not None
    area = 4 * np.pi / (12 << (2 * fp.order))
    return Column((4 << (2 * fp.order)) + fp.ipix), Column(fp.prob / area, unit=u.sr**-1)


def rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * kx + (1 - math.cos(angle_rad)) * kx @ kx


def native_density(skymap: SkyMap) -> Callable[[np.ndarray], np.ndarray]:
    """Exact density (sr^-1) of a multi-order map at unit vectors (n, 3), by lookup at order 29."""
    start = skymap.ipix << (2 * (29 - skymap.order))
    srt = np.argsort(start)
    start, dens = start[srt], skymap.probdensity[srt]

    def at(vec: np.ndarray) -> np.ndarray:
        q = hp.vec2pix(1 << 29, vec[:, 0], vec[:, 1], vec[:, 2], nest=True)
        return dens[np.searchsorted(start, q, side="right") - 1]

    return at


def rotated_flat(skymap: SkyMap, rot: np.ndarray, order: int = 8) -> np.ndarray:
    """The map rotated by ``rot``, as a flat NESTED probability map: exact density at each pixel centre."""
    nside = 1 << order
    vec = np.column_stack(hp.pix2vec(nside, np.arange(12 * nside * nside), nest=True))
    prob = native_density(skymap)(vec @ rot) * (4 * np.pi / vec.shape[0])  # rows @ rot = rot^-1 applied
    return prob / prob.sum()


def flat_skymap(prob: np.ndarray) -> SkyMap:
    order = int(round(math.log(prob.size // 12, 4)))
    return SkyMap(uniq=(4 << (2 * order)) + np.arange(prob.size, dtype=np.int64),
                  probdensity=prob / (4 * np.pi / prob.size))


def footprint_density(fp: Footprint, vec: np.ndarray) -> np.ndarray:
    """Density (sr^-1) of a sky-map footprint at unit vectors."""
    assert fp.order is not None
    q = hp.vec2pix(1 << fp.order, vec[:, 0], vec[:, 1], vec[:, 2], nest=True)
    i = np.minimum(np.searchsorted(fp.ipix, q), fp.ipix.size - 1)
    return np.where(fp.ipix[i] == q, fp.prob[i], 0.0) / (4 * np.pi / (12 << (2 * fp.order)))


def same(a: SpatialResult, b: SpatialResult) -> bool:
    if (a.test, a.coincident) != (b.test, b.coincident):
        return False
    for x, y in ((a.overlap, b.overlap), (a.separation, b.separation)):
        if (x is None) != (y is None) or (x is not None and y is not None and not math.isclose(x, y, rel_tol=1e-9,
                                                                                              abs_tol=1e-12)):
            return False
    return True


# --------------------------------------------------------------------------- footprints of sky maps


def test_doctests() -> None:
    result = doctest.testmod(sp)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", MOC_FILES)
def test_skymap_footprint_keeps_the_most_probable_pixels(maps: dict[str, RealMap], name: str) -> None:
    m = maps[name]
    fp, sky = m.fp, m.skymap
    assert fp.kind == "skymap"
    assert fp.order is not None
    assert fp.order <= min(8, int(sky.order.max()))
    assert fp.ipix.size <= sp.DEFAULT_MAX_PIXELS
    assert np.all(np.diff(fp.ipix) > 0)
    assert math.isclose(float(fp.prob.sum()), 1.0, rel_tol=1e-12)
    # the kept pixels hold >= 99.9 % of the native map's probability
    p = sky.probability / sky.probability.sum()
    coarse = np.where(sky.order >= fp.order, sky.ipix >> (2 * np.maximum(sky.order - fp.order, 0)), -1)
    fine = sky.order < fp.order  # native pixels coarser than the footprint: kept iff their first child is
    first_child = sky.ipix << (2 * np.maximum(fp.order - sky.order, 0))
    kept = np.isin(np.where(fine, first_child, coarse), fp.ipix)
    assert p[kept].sum() >= 0.999 - 1e-12
    # the 90 % region: the most probable pixels reaching 90 %, and not one fewer
    inside = fp.prob >= fp.threshold
    assert fp.prob[inside].sum() >= 0.9 * 0.999
    assert fp.prob[inside].sum() - fp.prob[fp.prob == fp.threshold].sum() < 0.9 / 0.999
    assert fp.prob[~inside].max(initial=0.0) < fp.threshold
    # its coarse copy
    assert fp.region_order == min(sp.REGION_ORDER, fp.order)
    assert np.array_equal(fp.region, np.unique(fp.ipix[inside] >> (2 * (fp.order - fp.region_order))))


@pytest.mark.parametrize("name", MOC_FILES)
def test_extent_holds_every_kept_pixel(maps: dict[str, RealMap], name: str) -> None:
    fp = maps[name].fp
    assert fp.order is not None
    assert fp.ra is not None
    assert fp.dec is not None
    corners = np.concatenate(hp.boundaries(1 << fp.order, fp.ipix, step=2, nest=True).transpose(0, 2, 1))
    ra, dec = hp.vec2ang(corners, lonlat=True)
    farthest = float(np.max(sp.separation(fp.ra, fp.dec, ra, dec)))
    assert fp.extent is not None  # none of these maps reaches the whole sky
    assert farthest <= fp.extent + 1e-9
    assert fp.extent <= farthest + 2 * math.degrees(hp.max_pixrad(1 << fp.order))


def test_order_follows_the_map(maps: dict[str, RealMap], gbm: tuple[SkyMap, Footprint, np.ndarray]) -> None:
    assert gbm[1].order == 3  # a flat NSIDE = 8 map is not upsampled
    assert maps["userguide_bayestar.multiorder.fits"].fp.order == 8
    assert maps["gwcelery_MS220722v_bayestar.multiorder.fits"].fp.order == 7  # 3800 deg^2 at 99.9 %
    assert maps["gwcelery_swift_skymap.multiorder.fits"].fp.order == 6  # 24 000 deg^2 at 99.9 %
    small = skymap_footprint(maps["gwcelery_MS220722v_bayestar.multiorder.fits"].skymap, max_pixels=1000)
    assert small.ipix.size <= 1000
    assert small.order is not None
    assert small.order < 7
    assert gbm[1].extent is None  # 99.9 % of a GBM map reaches the whole sky


def test_parameters_are_checked(maps: dict[str, RealMap]) -> None:
    sky = maps[MOC_FILES[0]].skymap
    for kwargs in ({"order": 14}, {"keep": 0.5}, {"keep": 1.5}, {"max_pixels": 4}):
        with pytest.raises(ValueError, match="order|keep|max_pixels"):
            skymap_footprint(sky, **kwargs)
    with pytest.raises(ValueError, match="no probability"):
        skymap_footprint(SkyMap(uniq=np.array([4, 5], dtype=np.int64), probdensity=np.zeros(2)))


# --------------------------------------------------------------------------- footprints of regions


def test_region_footprints_are_90_percent_shapes() -> None:
    assert region_footprint(None) == Footprint("none")
    assert region_footprint(Point(10.0, 20.0)) == Footprint("point", 10.0, 20.0, extent=0.0)
    c = region_footprint(Circle(10.0, 20.0, 1.0, containment=0.68))
    assert c.kind == "circle"
    assert c.radius == pytest.approx(1.4216, abs=1e-4)  # Gaussian 68 % -> 90 %
    assert c.extent == c.radius
    assert region_footprint(Circle(10.0, 20.0, 1.0)).radius == 1.0  # no containment: taken as 90 %
    assert region_footprint(Circle(10.0, 20.0, 1.0, containment=1.0)).radius == 1.0
    assert region_footprint(Circle(10.0, 20.0, 0.0)).kind == "point"
    e = region_footprint(Ellipse(10.0, 20.0, 2.0, 1.0, 30.0, containment=0.5))
    assert (e.kind, e.position_angle) == ("ellipse", 30.0)
    assert e.radius == pytest.approx(2 * 1.8226, abs=1e-4)
    assert e.semi_minor == pytest.approx(1.8226, abs=1e-4)


def test_rectangle_is_its_circumscribed_circle() -> None:
    maxi = [a for a in parsed_alerts() if isinstance(a.region, Rectangle)]
    assert maxi  # the MAXI GSC notice of the corpus
    rect = maxi[0].region
    assert isinstance(rect, Rectangle)
    fp = footprint(maxi[0])
    assert fp.kind == "rectangle"
    corners = np.asarray(rect.corners)
    seps = sp.separation(rect.ra, rect.dec, corners[:, 0], corners[:, 1])
    assert fp.radius == pytest.approx(float(seps.max()), rel=1e-12)  # containment 0.9: no scaling
    # every corner is inside, a point just beyond the farthest corner is not
    for ra, dec in rect.corners:
        assert compare(fp, region_footprint(Point(ra, dec))).coincident
    far = int(np.argmax(seps))
    bearing = float(sp._bearing(rect.ra, rect.dec, corners[far, 0], corners[far, 1]))
    ra_out, dec_out = sp._destination(rect.ra, rect.dec, math.radians(float(seps[far]) + 1e-6), bearing)
    assert not compare(fp, region_footprint(Point(float(ra_out), float(dec_out)))).coincident


# --------------------------------------------------------------------------- serialization


def corpus_footprints() -> list[tuple[Alert, Footprint]]:
    return [(a, footprint(a)) for a in parsed_alerts()]


def test_round_trip_of_every_real_notice() -> None:
    pairs = corpus_footprints()
    kinds = {fp.kind for _, fp in pairs}
    assert kinds == {"none", "point", "circle", "ellipse", "rectangle", "skymap"}
    for alert, fp in pairs:
        raw = fp.to_bytes()
        back = Footprint.from_bytes(raw)
        assert back == fp, alert.event_key
        assert back.to_bytes() == raw
        assert raw[0] == FORMAT_VERSION
        if fp.kind != "skymap":
            assert len(raw) < 100, (alert.event_key, len(raw))
        else:
            assert fp.ipix.dtype == np.int64
            assert back.ipix.dtype == np.int64
            assert back.prob.dtype == np.float64
            assert len(raw) < 12 * fp.ipix.size + 4 * fp.region.size + 100


def test_sizes(maps: dict[str, RealMap], gbm: tuple[SkyMap, Footprint, np.ndarray]) -> None:
    assert len(region_footprint(Point(1.0, 2.0)).to_bytes()) == 18
    assert len(region_footprint(Circle(1.0, 2.0, 3.0)).to_bytes()) == 26
    assert len(region_footprint(Ellipse(1.0, 2.0, 3.0, 2.0, 10.0)).to_bytes()) == 42
    assert len(Footprint("none").to_bytes()) == 2
    assert len(maps["userguide_bayestar.multiorder.fits"].fp.to_bytes()) < 40_000  # 31 deg^2 GW map
    assert len(gbm[1].to_bytes()) < 10_000
    for m in maps.values():
        assert len(m.fp.to_bytes()) < 12 * sp.DEFAULT_MAX_PIXELS + 16_000


def test_from_bytes_rejects_damage(maps: dict[str, RealMap]) -> None:
    raw = maps[MOC_FILES[0]].fp.to_bytes()
    for bad, match in (
        (raw[:-1], "expected"),
        (raw + b"\0", "expected"),
        (raw[:10], "truncated"),
        (b"\x01", "truncated"),
        (bytes([FORMAT_VERSION + 1]) + raw[1:], "version"),
        (bytes([FORMAT_VERSION, 17]) + raw[2:], "kind"),
        (region_footprint(Point(1.0, 2.0)).to_bytes()[:-3], "expected"),
    ):
        with pytest.raises(ValueError, match=match):
            Footprint.from_bytes(bad)


# --------------------------------------------------------------------------- I_Omega against RAVEN


def test_overlap_is_ravens_formula_on_the_rebinned_maps(
    maps: dict[str, RealMap], gbm: tuple[SkyMap, Footprint, np.ndarray]
) -> None:
    """Our sparse integral equals RAVEN's flat-map integral of the same re-binned maps, for every pair."""
    fps = [m.fp for m in maps.values()] + [gbm[1]]
    for i, a in enumerate(fps):
        for b in fps[i:]:
            ours = compare(a, b).overlap
            assert ours is not None
            reference = raven(flat(a), flat(b), se_nested=True, ext_nested=True)
            assert ours == pytest.approx(reference, rel=EXACT, abs=1e-12)


@pytest.mark.parametrize("name", BAYESTAR)
def test_self_overlap_against_raven_on_the_native_map(maps: dict[str, RealMap], name: str) -> None:
    m = maps[name]
    reference = raven(m.probdensity, m.probdensity, m.uniq, m.uniq)
    assert compare(m.fp, m.fp).overlap == pytest.approx(reference, rel=0.01)


def test_gw_map_against_the_combined_map(maps: dict[str, RealMap]) -> None:
    gw, combined = maps["userguide_bayestar.multiorder.fits"], maps["userguide_combined-ext.multiorder.fits"]
    reference = raven(gw.probdensity, combined.probdensity, gw.uniq, combined.uniq)
    result = compare(gw.fp, combined.fp)
    assert result.test == "skymap-overlap"
    assert result.coincident
    assert result.overlap == pytest.approx(reference, rel=0.01)


def test_the_broad_swift_map_loses_its_peak_when_rebinned(maps: dict[str, RealMap]) -> None:
    """A 24 000 deg^2 BAT-GUANO map is stored at order 6: its 0.1 deg^2 peak (5 % of the probability) is smoothed.

    Its self-overlap, dominated by the peak, drops; overlaps with maps broader
    than a degree (GW maps, GBM) do not (see the rotated-copy and GBM tests).
    """
    m = maps["gwcelery_swift_skymap.multiorder.fits"]
    native = raven(m.probdensity, m.probdensity, m.uniq, m.uniq)
    ours = compare(m.fp, m.fp).overlap
    assert ours is not None
    assert ours < native / 10
    with_gw = raven(m.probdensity, maps[MOC_FILES[2]].probdensity, m.uniq, maps[MOC_FILES[2]].uniq)
    assert compare(m.fp, maps[MOC_FILES[2]].fp).overlap == pytest.approx(with_gw, rel=0.07)


@pytest.mark.parametrize("name", BAYESTAR)
@pytest.mark.parametrize("angle", [0.5, 2.0, 5.0, 20.0, 60.0])
def test_map_against_a_rotated_copy(maps: dict[str, RealMap], name: str, angle: float) -> None:
    """The real map against itself moved by ``angle`` deg: RAVEN (native MOC x flat NESTED copy) vs ours."""
    m = maps[name]
    ra, dec = m.skymap.max_position()
    axis = np.cross(hp.ang2vec(ra, dec, lonlat=True), [0.0, 0.0, 1.0])
    copy = rotated_flat(m.skymap, rotation(axis, math.radians(angle)))
    reference = raven(m.probdensity, copy, m.uniq, [], ext_nested=True)
    result = compare(m.fp, skymap_footprint(flat_skymap(copy)))
    assert result.test == "skymap-overlap"
    assert result.overlap == pytest.approx(reference, rel=0.03, abs=0.01)


def test_gw_map_against_the_fermi_gbm_map(
    maps: dict[str, RealMap], gbm: tuple[SkyMap, Footprint, np.ndarray]
) -> None:
    """The GW map against the flat RING GBM map (RAVEN's MOC x flat path), as is and moved towards the GBM peak."""
    _, g, ring = gbm
    m = maps["userguide_bayestar.multiorder.fits"]
    as_is = compare(m.fp, g)
    assert as_is.overlap == pytest.approx(raven(m.probdensity, ring, m.uniq, [], ext_nested=False), rel=0.03,
                                          abs=0.01)
    assert as_is.overlap is not None
    assert as_is.overlap < 0.1  # the GW map lies where the GBM map excludes the burst
    assert not as_is.coincident
    v_gw = hp.ang2vec(*m.skymap.max_position(), lonlat=True)
    v_gbm = hp.ang2vec(g.ra, g.dec, lonlat=True)
    full = math.acos(float(np.clip(v_gw @ v_gbm, -1, 1)))
    nested = hp.reorder(ring, r2n=True)
    for fraction in (0.5, 0.8, 1.0):
        copy = rotated_flat(m.skymap, rotation(np.cross(v_gw, v_gbm), fraction * full))
        reference = raven(copy, nested, se_nested=True, ext_nested=True)
        result = compare(skymap_footprint(flat_skymap(copy)), g)
        assert result.overlap == pytest.approx(reference, rel=0.03)
        assert result.coincident


@pytest.mark.parametrize("name", MOC_FILES)
def test_map_against_points(maps: dict[str, RealMap], name: str) -> None:
    """RAVEN's point formula: exact on the re-binned map, within one pixel's density variation on the native one."""
    m = maps[name]
    fp = m.fp
    assert fp.order is not None
    uniq, dens = as_moc_columns(fp)
    rng = np.random.default_rng(7)
    # exactness: points at kept pixel centres, RAVEN on the footprint written out as a MOC
    for k in rng.choice(fp.ipix.size, 20, replace=False):
        ra, dec = hp.pix2ang(1 << fp.order, int(fp.ipix[k]), nest=True, lonlat=True)
        result = compare(fp, region_footprint(Point(float(ra), float(dec))))
        assert result.test == "skymap-point"
        assert result.overlap == pytest.approx(raven(dens, [], uniq, [], ra=float(ra), dec=float(dec)), rel=EXACT)
        assert result.coincident == bool(fp.prob[k] >= fp.threshold)
    # fidelity: points drawn from the native map, RAVEN on the native map (not for the Swift map, whose
    # order-9 peak is averaged over order-6 pixels, see test_the_broad_swift_map_loses_its_peak_when_rebinned)
    if name == "gwcelery_swift_skymap.multiorder.fits":
        return
    p = m.skymap.probability / m.skymap.probability.sum()
    rows = rng.choice(p.size, 100, p=p)
    ra, dec = hp.pix2ang(1 << m.skymap.order[rows], m.skymap.ipix[rows], nest=True, lonlat=True)
    log_ratio = []
    for r, d in zip(ra.tolist(), dec.tolist(), strict=True):
        ours = compare(fp, region_footprint(Point(r, d))).overlap
        assert ours is not None
        log_ratio.append(math.log(ours / raven(m.probdensity, [], m.uniq, [], ra=r, dec=d)))
    assert abs(float(np.median(log_ratio))) < 0.05
    assert max(abs(x) for x in log_ratio) < 0.45


# --------------------------------------------------------------------------- circles and ellipses


@pytest.mark.parametrize("radius", [0.1, 1.0, 10.0, 28.0, 45.0, 90.0, 140.0])
def test_fisher_kappa_holds_90_percent(radius: float) -> None:
    kappa = float(fisher_kappa(radius))
    assert kappa > 0

    scale = math.sqrt(kappa)  # integrate in u = t sqrt(kappa): the density is then about 1 wide

    def density(u: float) -> float:
        return math.exp(kappa * (math.cos(u / scale) - 1.0)) * math.sin(u / scale)

    def mass(upper: float) -> float:
        knee = min(upper, 12.0)
        head = integrate.quad(density, 0.0, knee, epsabs=0, epsrel=1e-12, limit=200)[0]
        tail = integrate.quad(density, knee, upper, epsabs=0, epsrel=1e-12, limit=200)[0] if upper > knee else 0.0
        return head + tail

    inside = mass(math.radians(radius) * scale)
    total = mass(math.pi * scale)
    assert inside / total == pytest.approx(0.9, rel=1e-7)


def test_fisher_kappa_of_huge_circles_is_uniform() -> None:
    assert np.all(fisher_kappa([143.2, 170.0, 180.0]) == 0.0)
    assert float(fisher_kappa(143.0)) > 0


def fisher_on_grid(nside: int, ra: float, dec: float, radius90: float) -> np.ndarray:
    """A normalized Fisher-von Mises density with 90 % radius ``radius90``, as probabilities on a NESTED grid."""
    kappa = float(fisher_kappa(radius90))
    vec = np.column_stack(hp.pix2vec(nside, np.arange(12 * nside * nside), nest=True))
    w = np.exp(kappa * (vec @ hp.ang2vec(ra, dec, lonlat=True) - 1.0))
    return w / w.sum()


@pytest.mark.parametrize(
    ("r1", "r2", "sep"),
    [(1.0, 1.0, 0.5), (1.0, 2.0, 2.5), (5.0, 3.0, 4.0), (20.0, 10.0, 25.0), (60.0, 40.0, 50.0), (1.0, 1.0, 10.0),
     (150.0, 150.0, 90.0)],
)
def test_circle_overlap_is_the_fisher_integral(r1: float, r2: float, sep: float) -> None:
    ra2, dec2 = (float(x) for x in sp._destination(10.0, 20.0, math.radians(sep), 0.7))
    nside = 512
    brute = float(np.sum(fisher_on_grid(nside, 10.0, 20.0, r1) * fisher_on_grid(nside, ra2, dec2, r2))) * 12 * nside**2
    result = compare(region_footprint(Circle(10.0, 20.0, r1)), region_footprint(Circle(ra2, dec2, r2)))
    assert result.test == "region-overlap"
    assert result.separation == pytest.approx(sep, abs=1e-9)
    assert result.overlap == pytest.approx(brute, rel=1e-5)


def test_point_in_circle_overlap_is_the_fisher_density() -> None:
    for r, sep in ((0.5, 0.1), (3.0, 2.0), (30.0, 40.0)):
        kappa = float(fisher_kappa(r))
        ra, dec = (float(x) for x in sp._destination(100.0, -30.0, math.radians(sep), 2.0))
        # C(k) exp(k cos t), C(k) = k / (4 pi sinh k), in logs (sinh overflows)
        log_sinh = kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2)
        log_density = math.log(kappa / (4 * math.pi)) - log_sinh + kappa * math.cos(math.radians(sep))
        result = compare(region_footprint(Point(ra, dec)), region_footprint(Circle(100.0, -30.0, r)))
        assert result.test == "point-in-region"
        assert result.overlap == pytest.approx(4 * math.pi * math.exp(log_density), rel=1e-9)
        assert result.coincident == (sep <= r)


def gaussian_on_grid(nside: int, pix: np.ndarray, fp: Footprint) -> np.ndarray:
    """An ellipse's 2-D Gaussian (90 % axes) in its azimuthal-equidistant plane, normalized on the pixels."""
    ra, dec = hp.pix2ang(nside, pix, nest=True, lonlat=True)
    w = sp._gauss_density(fp.ra, fp.dec, fp.radius, fp.semi_minor if fp.kind == "ellipse" else fp.radius,
                          fp.position_angle or 0.0, ra, dec)
    return w / w.sum()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Ellipse(200.0, 10.0, 3.0, 1.0, 30.0), Circle(201.5, 11.0, 2.0)),
        (Ellipse(200.0, 60.0, 4.0, 1.0, 100.0), Ellipse(203.0, 61.0, 2.0, 1.5, 10.0)),
        (Ellipse(10.0, -5.0, 1.0, 0.5, 0.0), Ellipse(10.0, -4.0, 1.0, 0.5, 90.0)),
    ],
)
def test_ellipse_overlap_is_the_gaussian_integral(a: Ellipse, b: Ellipse | Circle) -> None:
    """Brute force on the order-10 pixels within 15 deg (every density is < 1e-9 of its peak beyond)."""
    fa, fb = region_footprint(a), region_footprint(b)
    nside = 1024
    pix = hp.query_disc(nside, hp.ang2vec(a.ra, a.dec, lonlat=True), math.radians(15.0), nest=True)
    brute = float(np.sum(gaussian_on_grid(nside, pix, fa) * gaussian_on_grid(nside, pix, fb))) * 12 * nside**2
    result = compare(fa, fb)
    assert result.test == "region-overlap"
    assert result.overlap == pytest.approx(brute, rel=2e-3)


def test_round_ellipse_overlap_is_close_to_the_fisher_one() -> None:
    fisher = compare(region_footprint(Circle(50.0, 5.0, 1.0)), region_footprint(Circle(51.0, 5.0, 1.0))).overlap
    gauss = compare(region_footprint(Ellipse(50.0, 5.0, 1.0, 1.0, 0.0)), region_footprint(Circle(51.0, 5.0, 1.0)))
    assert gauss.overlap == pytest.approx(fisher, rel=1e-3)


@pytest.mark.parametrize("name", BAYESTAR[:2])
def test_map_against_circles_and_ellipses(maps: dict[str, RealMap], name: str) -> None:
    """The Fisher (Gaussian) density, truncated at 5 widths, integrated against the re-binned map, vs a
    brute-force sum at order 10-12; small regions tend to RAVEN's point formula."""
    fp = maps[name].fp
    ra0, dec0 = maps[name].skymap.max_position()
    for region in (Circle(ra0, dec0, 5.0), Circle(ra0 + 1.0, dec0, 1.0), Circle(ra0 + 1.0, dec0, 0.3),
                   Circle(ra0 + 3.0, dec0, 1.0), Ellipse(ra0 + 1.0, dec0, 3.0, 1.0, 30.0)):
        rf = region_footprint(region)
        assert rf.radius is not None
        width = rf.radius / sp._K90 if rf.kind == "ellipse" else math.degrees(1 / math.sqrt(rf._kappa))
        nside = 1 << 12 if width < 1 else 1 << 10
        pix = hp.query_disc(nside, hp.ang2vec(rf.ra, rf.dec, lonlat=True), math.radians(5 * width), nest=True)
        vec = np.column_stack(hp.pix2vec(nside, pix, nest=True))
        if rf.kind == "ellipse":
            w = sp._gauss_density(rf.ra, rf.dec, rf.radius, rf.semi_minor, rf.position_angle,
                                  *hp.vec2ang(vec, lonlat=True))
        else:
            w = np.exp(rf._kappa * (vec @ hp.ang2vec(rf.ra, rf.dec, lonlat=True) - 1.0))
        brute = 4 * math.pi * float(np.sum(w / w.sum() * footprint_density(fp, vec)))
        result = compare(fp, rf)
        assert result.test == "skymap-point"
        assert result.overlap == pytest.approx(brute, rel=2e-3, abs=1e-3)
        assert compare(rf, fp).overlap == pytest.approx(result.overlap, rel=1e-12)
    for dra in (0.0, 1.0):
        point = compare(fp, region_footprint(Point(ra0 + dra, dec0))).overlap
        tiny = compare(fp, region_footprint(Circle(ra0 + dra, dec0, 1e-3))).overlap
        assert tiny == pytest.approx(point, rel=1e-6)


@pytest.mark.parametrize("name", ["gwcelery_rrt_small_area.fits", "userguide_bayestar.multiorder.fits"])
def test_support_shortcut_equals_the_full_integral(maps: dict[str, RealMap], name: str) -> None:
    """A region whose integration disc misses the map's kept pixels skips the discretization (overlap 0); over
    circles and ellipses of many sizes all over the sky, and hugging the map's edge, the result is exactly the
    full integral's."""
    fp = maps[name].fp
    qa = sp._Density.of_map(fp)
    rng = np.random.default_rng(7)
    kept = np.column_stack(hp.pix2ang(1 << fp.order, fp.ipix, nest=True, lonlat=True))
    edge = kept[rng.choice(len(kept), 60)]  # centres at kept pixels: discs that straddle the map's support
    anywhere = np.column_stack((rng.uniform(0, 360, 240), np.degrees(np.arcsin(rng.uniform(-1, 1, 240)))))
    skipped = 0
    for k, (ra, dec) in enumerate(np.vstack((edge, anywhere))):
        radius = float(rng.choice([0.05, 0.5, 2.0, 8.0, 20.0]))
        ra_off = float(ra) + (3 * radius if k < len(edge) else 0.0)  # just outside the support, or anywhere
        region = (Circle(ra_off % 360, float(dec), radius) if k % 2 else
                  Ellipse(ra_off % 360, float(dec), radius, radius / 3, 40.0))
        rf = region_footprint(region)
        full = max(sp._integrate(qa, sp._Density.of_region(rf, fp.order), False)[0], 0.0)
        meets = sp._region_meets_support(qa, region_footprint(region))
        skipped += not meets
        if not meets:
            assert full == 0.0, (region, full)
        assert compare(fp, region_footprint(region)).overlap == pytest.approx(full, rel=1e-12, abs=0.0)
    assert 20 < skipped < 280  # both paths are exercised


# --------------------------------------------------------------------------- 90 % region tests at boundaries


EPS = 1e-6  # deg


def at(ra: float, dec: float, distance: float, bearing_deg: float) -> tuple[float, float]:
    r, d = sp._destination(ra, dec, math.radians(distance), math.radians(bearing_deg))
    return float(r), float(d)


def test_boundaries_of_points_and_circles() -> None:
    p0 = region_footprint(Point(30.0, 40.0))
    for dist, want in ((POINT_MATCH_RADIUS - EPS, True), (POINT_MATCH_RADIUS + EPS, False)):
        r = compare(p0, region_footprint(Point(*at(30.0, 40.0, dist, 77.0))))
        assert (r.test, r.coincident, r.overlap) == ("point-point", want, None)
    c = region_footprint(Circle(30.0, 40.0, 2.0))
    for dist, want in ((2.0 - EPS, True), (2.0 + EPS, False)):
        assert compare(c, region_footprint(Point(*at(30.0, 40.0, dist, 200.0)))).coincident == want
    for dist, want in ((3.5 - EPS, True), (3.5 + EPS, False)):
        other = region_footprint(Circle(*at(30.0, 40.0, dist, 300.0), 1.5))
        result = compare(c, other)
        assert (result.test, result.coincident) == ("region-overlap", want)


def test_boundaries_of_ellipses() -> None:
    e = region_footprint(Ellipse(120.0, -20.0, 3.0, 1.0, 40.0))  # 90 % as stated
    for bearing, axis in ((40.0, 3.0), (220.0, 3.0), (130.0, 1.0), (310.0, 1.0)):
        for dist, want in ((axis - EPS, True), (axis + EPS, False)):
            r = compare(e, region_footprint(Point(*at(120.0, -20.0, dist, bearing))))
            assert (r.test, r.coincident) == ("point-in-region", want)
    # tip to tip along the major axis, and side by side along the minor one (the other ellipse's axis
    # along the great circle joining the centres: its position angle turns with the meridians)
    for bearing, reach, turn in ((40.0, 3.0 + 2.0, 180.0), (130.0, 1.0 + 0.5, 90.0)):
        for gap, want in ((-1e-3, True), (1e-3, False)):
            ra2, dec2 = at(120.0, -20.0, reach + gap, bearing)
            pa2 = (math.degrees(float(sp._bearing(ra2, dec2, 120.0, -20.0))) + turn) % 360.0
            other = region_footprint(Ellipse(ra2, dec2, 2.0, 0.5, pa2))
            assert compare(e, other).coincident == want
            assert compare(other, e).coincident == want
    # a cross: centres outside each other, boundaries crossing
    cross = region_footprint(Ellipse(*at(120.0, -20.0, 1.5, 40.0), 3.0, 0.2, 130.0))
    assert compare(e, cross).coincident


def test_boundaries_of_maps(maps: dict[str, RealMap]) -> None:
    fp = maps["userguide_bayestar.multiorder.fits"].fp
    assert fp.order is not None
    nside = 1 << fp.order
    inside = fp.prob >= fp.threshold
    weakest_in = int(np.flatnonzero(inside)[np.argmin(fp.prob[inside])])
    strongest_out = int(np.flatnonzero(~inside)[np.argmax(fp.prob[~inside])])
    for k, want in ((weakest_in, True), (strongest_out, False)):
        ra, dec = hp.pix2ang(nside, int(fp.ipix[k]), nest=True, lonlat=True)
        assert compare(fp, region_footprint(Point(float(ra), float(dec)))).coincident == want
    # a circle reaching for the region: coincident once within the pixel radius of a region pixel centre
    region_vec = np.column_stack(hp.pix2vec(nside, fp.ipix[inside], nest=True))
    ra_c, dec_c = at(*hp.pix2ang(nside, int(fp.ipix[weakest_in]), nest=True, lonlat=True), 3.0, 0.0)
    nearest = math.degrees(math.acos(float(np.max(region_vec @ hp.ang2vec(ra_c, dec_c, lonlat=True)))))
    pixrad = math.degrees(hp.max_pixrad(nside))
    for r, want in ((nearest - pixrad + 1e-4, True), (nearest - pixrad - 1e-4, False)):
        assert compare(fp, region_footprint(Circle(ra_c, dec_c, r))).coincident == want
        assert compare(region_footprint(Circle(ra_c, dec_c, r)), fp).coincident == want


def regions_intersect(a: Footprint, b: Footprint) -> bool:
    """Independent check: do the 90 % pixel sets share a pixel at the finer order?"""
    assert a.order is not None
    assert b.order is not None
    if a.order < b.order:
        a, b = b, a
    fine = a.ipix[a.prob >= a.threshold] >> (2 * (a.order - b.order))
    return bool(np.intersect1d(fine, b.ipix[b.prob >= b.threshold]).size)


def test_map_pairs_coincide_iff_their_90_percent_regions_share_a_pixel(
    maps: dict[str, RealMap], gbm: tuple[SkyMap, Footprint, np.ndarray]
) -> None:
    rng = np.random.default_rng(11)
    base = [maps[n] for n in BAYESTAR]
    fps = [m.fp for m in maps.values()] + [gbm[1]]
    for m in base:
        ra, dec = m.skymap.max_position()
        v = hp.ang2vec(ra, dec, lonlat=True)
        for angle in (1.0, 4.0, 8.0, 15.0, 30.0):
            axis = np.cross(v, rng.normal(size=3))
            fps.append(skymap_footprint(flat_skymap(rotated_flat(m.skymap, rotation(axis, math.radians(angle)),
                                                                  order=7))))
    n_yes = 0
    for i, a in enumerate(fps):
        results = compare_many(a, fps)
        for b, result in zip(fps, results, strict=True):
            assert result.coincident == regions_intersect(a, b)
            n_yes += result.coincident
            if result.overlap == 0.0:
                assert not np.intersect1d(a.ipix >> (2 * max(0, (a.order or 0) - (b.order or 0))),
                                          b.ipix >> (2 * max(0, (b.order or 0) - (a.order or 0)))).size
        assert results[i].coincident
    assert 0 < n_yes < len(fps) ** 2  # both outcomes occur


# --------------------------------------------------------------------------- consistency


def test_compare_is_symmetric_and_compare_many_agrees() -> None:
    fps = {fp.to_bytes(): fp for _, fp in corpus_footprints()}
    fps_list = list(fps.values())
    extra = [region_footprint(Ellipse(14.6, -40.0, 2.0, 1.0, 10.0)), region_footprint(Circle(15.0, -40.0, 3.0)),
             region_footprint(Point(14.5, -40.1))]
    fps_list += extra  # near the corpus' GW and Swift maps
    for a in fps_list:
        many = compare_many(a, fps_list)
        for b, m in zip(fps_list, many, strict=True):
            one, other = compare(a, b), compare(b, a)
            assert same(one, other), (a.kind, b.kind, one, other)
            assert same(one, m)


def test_none_is_a_temporal_coincidence_only() -> None:
    none = Footprint("none")
    for other in (none, region_footprint(Point(1.0, 2.0)), region_footprint(Circle(1.0, 2.0, 3.0))):
        assert compare(none, other) == SpatialResult("none", True, None, None)
        assert compare(other, none) == SpatialResult("none", True, None, None)
    assert compare_many(none, []) == []


def test_results_are_plain_python_values() -> None:
    c = region_footprint(Circle(1.0, 2.0, 3.0))
    for r in compare_many(c, [region_footprint(Point(1.5, 2.0)), region_footprint(Circle(2.0, 2.0, 1.0))]):
        assert type(r.overlap) is float
        assert type(r.separation) is float
        assert type(r.coincident) is bool
        with pytest.raises(AttributeError):
            r.coincident = False  # type: ignore[misc]

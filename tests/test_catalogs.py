# SPDX-License-Identifier: Apache-2.0
"""The local catalog engine: loading, the HEALPix cone search, region shapes, the annotator.

Real data only: the bundled catalogs of ``annotators/data/catalogs`` and the
real notices of ``tests/data/notices``.  Positions for bulk tests are real
notice positions and catalog sources, jittered with seeded generators; the
regions are those of real notices (re-centred on such positions where a test
needs many sources near the boundary).  Expected values come from independent
computations (astropy ``search_around_sky``, ``separation``,
``position_angle``, a TAN projection, the catalog files read directly), never
from the code under test.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import astropy.units as u
import healpy as hp
import numpy as np
import numpy.typing as npt
import pytest
import yaml
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.io import ascii as astropy_ascii
from astropy.table import Table
from astropy.wcs import WCS

from annotators.catalogs import (
    BUNDLED_DIR,
    Catalog,
    CatalogSpec,
    bundled_specs,
    load_catalog,
    load_catalogs,
    read_specs,
    unit_vectors,
)
from annotators.crossmatch import (
    NEIGHBOURHOOD_BOUND,
    CatalogAnnotator,
    cone_pairs,
    neighbourhood_radius,
    search_order,
)
from broker.annotate import Annotator
from broker.errors import CatalogError, RejectedNotice
from broker.formats import parse
from broker.model import Alert, Annotation, CatalogMatch, Circle, Ellipse, Point, Rectangle
from broker.replay import guess_topic
from tests.corpus import NOTICES, notice_files

FloatArray = npt.NDArray[np.float64]
K90 = math.sqrt(-2.0 * math.log(0.1))

EXPECTED_ROWS = {
    "4fgl-dr4": 7195,
    "4lac-dr3": 3407 + 407,
    "3hsp": 2013,
    "roma-bzcat5": 3561,
    "icecat-1": 348,
    "50mgc": 15424,
    "swift-grb": 1804 - 2,  # two bursts have neither an XRT nor a BAT position
}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def catalogs() -> dict[str, Catalog]:
    return {c.name: c for c in load_catalogs(bundled_specs())}


def notice(rel: str) -> Alert:
    """The alert a real notice of the corpus becomes."""
    path = NOTICES / rel
    return parse(path.read_bytes(), guess_topic(path))


def real_alerts() -> Iterator[tuple[str, Alert]]:
    for path in notice_files():
        try:
            yield str(path.relative_to(NOTICES)), parse(path.read_bytes(), guess_topic(path))
        except RejectedNotice:
            continue


@pytest.fixture(scope="module")
def notice_positions() -> tuple[FloatArray, FloatArray]:
    """RA and Dec (deg) of every real notice with a position."""
    pos = [a.position for _, a in real_alerts() if a.region is not None]
    return np.array([p[0] for p in pos if p]), np.array([p[1] for p in pos if p])


def jittered(
    rng: np.random.Generator, ra: FloatArray, dec: FloatArray, n: int, sigma: float
) -> tuple[FloatArray, FloatArray]:
    """``n`` positions drawn from ``(ra, dec)`` and moved by a Gaussian of ``sigma`` deg per axis."""
    j = rng.integers(0, ra.size, n)
    out_ra = np.mod(ra[j] + rng.normal(0.0, sigma, n), 360.0)
    out_ra[out_ra >= 360.0] = 0.0
    return out_ra, np.clip(dec[j] + rng.normal(0.0, sigma, n), -90.0, 90.0)


def astropy_pairs(ra: FloatArray, dec: FloatArray, cat: Catalog, radius: float | FloatArray) -> set[tuple[int, int]]:
    i1, i2, _, _ = search_around_sky(
        SkyCoord(ra * u.deg, dec * u.deg), SkyCoord(cat.ra * u.deg, cat.dec * u.deg), radius * u.deg
    )
    return set(zip(i1.tolist(), i2.tolist(), strict=True))


def matches_of(annotation: Annotation | None, catalog: str) -> list[CatalogMatch]:
    assert annotation is not None
    return [m for m in annotation.matches if m.catalog == catalog]


def fermi_table() -> Table:
    """The 4FGL-DR4 file read directly (not through the loader)."""
    return Table.read(BUNDLED_DIR / "fermi-lat" / "gll_psc_v35.fit", hdu="LAT_Point_Source_Catalog")


def f64(col: object) -> FloatArray:
    return np.asarray(np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan), dtype=np.float64)


# --------------------------------------------------------------------------- the bundled files


def test_every_bundled_catalog_loads_with_the_documented_row_count(catalogs: dict[str, Catalog]) -> None:
    assert {s.name for s in bundled_specs()} == set(EXPECTED_ROWS)
    for name, rows in EXPECTED_ROWS.items():
        assert len(catalogs[name]) == rows, name
        cat = catalogs[name]
        assert cat.ra.dtype == np.float64
        assert ((cat.ra >= 0) & (cat.ra < 360)).all()
        assert (np.abs(cat.dec) <= 90).all()
        assert cat.source_id.shape == (rows,)
        assert (np.char.str_len(cat.source_id) > 0).all()
    assert catalogs["swift-grb"].n_dropped == 2
    assert all(catalogs[n].n_dropped == 0 for n in EXPECTED_ROWS if n != "swift-grb")


def test_4lac_is_both_files_in_order(catalogs: dict[str, Catalog]) -> None:
    spec = next(s for s in bundled_specs() if s.name == "4lac-dr3")
    high = load_catalog(spec.model_copy(update={"paths": spec.paths[:1]}))
    low = load_catalog(spec.model_copy(update={"paths": spec.paths[1:]}))
    assert (len(high), len(low)) == (3407, 407)
    assert list(catalogs["4lac-dr3"].source_id) == list(high.source_id) + list(low.source_id)


def test_provenance_lists_every_bundled_file_with_its_size() -> None:
    text = (BUNDLED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([^`]+)` \|.*\| (\d+) \|$", text, flags=re.MULTILINE))
    files = {
        str(p.relative_to(BUNDLED_DIR)): p.stat().st_size
        for p in BUNDLED_DIR.rglob("*")
        if p.is_file() and p.name not in ("PROVENANCE.md", "bundled.yaml")
    }
    assert {k: int(v) for k, v in rows.items()} == files
    used = {str(Path(p).relative_to(BUNDLED_DIR)) for s in bundled_specs() for p in s.paths}
    assert used == set(files) - {"neutrino/IceCat-1_README.txt"}


def test_4fgl_columns_are_the_file_values(catalogs: dict[str, Catalog]) -> None:
    t = fermi_table()
    cat = catalogs["4fgl-dr4"]
    assert list(cat.source_id) == [s.strip() for s in t["Source_Name"].astype(str)]
    np.testing.assert_array_equal(cat.ra, f64(t["RAJ2000"]))
    np.testing.assert_array_equal(cat.dec, f64(t["DEJ2000"]))
    assert cat.err_semi_major is not None
    assert cat.err_pa is not None
    np.testing.assert_array_equal(cat.err_semi_major, f64(t["Conf_95_SemiMajor"]))
    np.testing.assert_array_equal(cat.err_pa, f64(t["Conf_95_PosAng"]))
    assert int(np.isnan(cat.err_semi_major).sum()) == int(np.ma.getmaskarray(t["Conf_95_SemiMajor"]).sum()) == 90
    assert cat.spec.error_containment == 0.95


def test_sexagesimal_positions_agree_with_astropy(catalogs: dict[str, Catalog]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about 60.0 seconds, which both accept
        hsp = astropy_ascii.read(BUNDLED_DIR / "blazars" / "3hsp.csv", format="csv")
        ref = SkyCoord(list(hsp["R.A."]), list(hsp["Dec"]), unit=(u.hourangle, u.deg))
        bz = astropy_ascii.read(BUNDLED_DIR / "blazars" / "romabzcat5_names_coords.csv", format="csv")
        ref_bz = SkyCoord(list(bz["RA (J2000.0)"]), list(bz["Dec (J2000.0)"]), unit=(u.hourangle, u.deg))
        with (BUNDLED_DIR / "grb" / "swift_grb_table.tsv").open(encoding="latin-1", newline="") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["XRT RA (J2000)"] not in ("", "n/a")]
        ref_xrt = SkyCoord(
            [r["XRT RA (J2000)"] for r in rows], [r["XRT Dec (J2000)"] for r in rows], unit=(u.hourangle, u.deg)
        )
    for cat, coords in ((catalogs["3hsp"], ref), (catalogs["roma-bzcat5"], ref_bz)):
        np.testing.assert_allclose(cat.ra, coords.ra.deg, rtol=0, atol=1e-9)
        np.testing.assert_allclose(cat.dec, coords.dec.deg, rtol=0, atol=1e-9)
    swift = catalogs["swift-grb"]
    where = {name: i for i, name in enumerate(swift.source_id)}
    idx = np.array([where["GRB " + r["GRB"]] for r in rows])
    assert set(np.asarray(swift.properties["position"])[idx]) == {"xrt"}
    assert len(rows) == int((np.asarray(swift.properties["position"]) == "xrt").sum())
    np.testing.assert_allclose(swift.ra[idx], ref_xrt.ra.deg, rtol=0, atol=1e-9)
    np.testing.assert_allclose(swift.dec[idx], ref_xrt.dec.deg, rtol=0, atol=1e-9)
    assert swift.err_semi_major is not None
    xrt_err = np.array([float(r["XRT 90% Error Radius [arcsec]"].replace("n/a", "nan")) / 3600 for r in rows])
    assert 0 < int(np.isnan(xrt_err).sum()) < 20  # a few XRT positions come without an error
    np.testing.assert_allclose(swift.err_semi_major[idx], xrt_err, rtol=1e-12)


def test_properties_drop_missing_values(catalogs: dict[str, Catalog]) -> None:
    lac = catalogs["4lac-dr3"]
    t = Table.read(BUNDLED_DIR / "fermi-lat" / "table-4LAC-DR3-h.fits")
    z = f64(t["Redshift"])
    unknown, known = int(np.flatnonzero(np.isinf(z))[0]), int(np.flatnonzero(np.isfinite(z))[0])
    assert "redshift" not in lac.properties_of(unknown)
    assert lac.properties_of(known)["redshift"] == pytest.approx(z[known])
    assert isinstance(lac.properties_of(known)["class"], str)
    fgl = catalogs["4fgl-dr4"]
    classes = np.asarray(fgl.properties["class"])
    unassociated = int(np.flatnonzero(np.ma.getmaskarray(fgl.properties["class"]))[0])
    assert "class" not in fgl.properties_of(unassociated)
    assert classes[unassociated] == ""
    props = fgl.properties_of(0)
    assert all(isinstance(v, bool | int | float | str) for v in props.values())


# --------------------------------------------------------------------------- cone search vs astropy


def test_unit_vectors_are_astropys_bit_for_bit(catalogs: dict[str, Catalog]) -> None:
    for cat in catalogs.values():
        x, y, z = unit_vectors(cat.ra, cat.dec)
        ref = SkyCoord(cat.ra * u.deg, cat.dec * u.deg).cartesian.xyz.value
        assert np.array_equal(np.stack([x, y, z]), ref), cat.name


@pytest.fixture(scope="module")
def bulk_positions(
    catalogs: dict[str, Catalog], notice_positions: tuple[FloatArray, FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """3000 positions: jittered real notice positions and jittered sources of every catalog."""
    rng = np.random.default_rng(20240611)
    ra1, dec1 = jittered(rng, *notice_positions, 1000, 5.0)
    src_ra = np.concatenate([c.ra for c in catalogs.values()])
    src_dec = np.concatenate([c.dec for c in catalogs.values()])
    ra2, dec2 = jittered(rng, src_ra, src_dec, 2000, 0.3)
    return np.concatenate([ra1, ra2]), np.concatenate([dec1, dec2])


@pytest.mark.parametrize("radius", [0.1, 1.0, 5.0, 20.0])
@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_cone_pairs_equal_search_around_sky(
    catalogs: dict[str, Catalog], bulk_positions: tuple[FloatArray, FloatArray], name: str, radius: float
) -> None:
    cat = catalogs[name]
    ra, dec = bulk_positions
    a, s, sep = cone_pairs(cat, ra, dec, radius)
    i1, i2, d2d, _ = search_around_sky(
        SkyCoord(ra * u.deg, dec * u.deg), SkyCoord(cat.ra * u.deg, cat.dec * u.deg), radius * u.deg
    )
    ours = set(zip(a.tolist(), s.tolist(), strict=True))
    assert len(ours) == a.size  # no duplicate pair
    assert ours == set(zip(i1.tolist(), i2.tolist(), strict=True))
    assert a.size > 0
    mine = np.lexsort((s, a))
    theirs = np.lexsort((i2, i1))
    np.testing.assert_allclose(sep[mine], d2d.deg[theirs], rtol=0, atol=1e-11)


def test_cone_pairs_with_per_centre_radii(
    catalogs: dict[str, Catalog], bulk_positions: tuple[FloatArray, FloatArray]
) -> None:
    """Radii of real notice regions, one per centre (astropy's array ``seplimit`` path)."""
    geo = [a.region for _, a in real_alerts() if isinstance(a.region, Circle)]
    radii = np.array([r.radius for r in geo if r is not None])
    rng = np.random.default_rng(5)
    idx = rng.choice(bulk_positions[0].size, 600, replace=False)
    ra, dec = bulk_positions[0][idx], bulk_positions[1][idx]
    radius = radii[rng.integers(0, radii.size, idx.size)]
    for name in ("4fgl-dr4", "50mgc", "icecat-1"):
        a, s, _ = cone_pairs(catalogs[name], ra, dec, radius)
        assert set(zip(a.tolist(), s.tolist(), strict=True)) == astropy_pairs(ra, dec, catalogs[name], radius)


def test_boundary_ties_are_decided_as_astropy_does(catalogs: dict[str, Catalog]) -> None:
    """Each centre's radius is astropy's own (Vincenty) separation to one source.

    astropy keeps a pair when the chord is within ``2 sin(r / 2)``, not when
    the Vincenty separation is ``<= r``; on such exact ties the two disagree,
    and ``cone_pairs`` must side with astropy every time.
    """
    cat = catalogs["4fgl-dr4"]
    rng = np.random.default_rng(11)
    j = rng.integers(0, len(cat), 4000)
    src = SkyCoord(cat.ra[j] * u.deg, cat.dec[j] * u.deg)
    centre = src.directional_offset_by(rng.uniform(0, 360, j.size) * u.deg, rng.uniform(0.01, 3, j.size) * u.deg)
    ra, dec = centre.ra.deg, centre.dec.deg
    radius = SkyCoord(ra * u.deg, dec * u.deg).separation(src).deg  # the tie: Vincenty says "on the boundary"
    a, s, _ = cone_pairs(cat, ra, dec, radius)
    ours = set(zip(a.tolist(), s.tolist(), strict=True))
    theirs = astropy_pairs(ra, dec, cat, radius)
    assert ours == theirs
    tie_pairs = set(zip(range(j.size), j.tolist(), strict=True))
    excluded = tie_pairs - theirs
    assert 0 < len(excluded) < len(tie_pairs)  # the ties really go both ways


def test_cone_pairs_large_radii_full_scan(
    catalogs: dict[str, Catalog], bulk_positions: tuple[FloatArray, FloatArray]
) -> None:
    """Radii beyond what any 3x3 block covers (the full-scan path), e.g. IceCube cascades (44 deg)."""
    assert search_order(np.array([44.06, 73.79])).tolist() == [-1, -1]
    ra, dec = bulk_positions[0][:300], bulk_positions[1][:300]
    for radius in (44.06, 73.79, 179.0):
        a, s, _ = cone_pairs(catalogs["4lac-dr3"], ra, dec, radius)
        assert set(zip(a.tolist(), s.tolist(), strict=True)) == astropy_pairs(ra, dec, catalogs["4lac-dr3"], radius)


def test_cone_pairs_rejects_bad_input(catalogs: dict[str, Catalog]) -> None:
    cat = catalogs["icecat-1"]
    with pytest.raises(ValueError, match="negative|>= 0"):
        cone_pairs(cat, [10.0], [10.0], -1.0)
    with pytest.raises(ValueError, match="dec"):
        cone_pairs(cat, [10.0], [91.0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        cone_pairs(cat, [np.nan], [0.0], 1.0)
    a, s, sep = cone_pairs(cat, [], [], 1.0)
    assert a.size == s.size == sep.size == 0


# --------------------------------------------------------------------------- the neighbourhood bound


def _test_points(rng: np.random.Generator, order: int, n: int) -> tuple[FloatArray, FloatArray]:
    """Random points, points just inside pixel corners, near the poles and at the polar/equatorial transition."""
    nside = 1 << order
    ra = [rng.uniform(0, 360, n)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, n)))]
    cells = rng.integers(0, 12 * nside * nside, n)
    corners = hp.boundaries(nside, cells, step=1, nest=True)  # (n, 3, 4)
    centre = np.stack(hp.pix2vec(nside, cells, nest=True), axis=1)
    pick = corners[np.arange(n), :, rng.integers(0, 4, n)]
    t = rng.uniform(1e-9, 1e-3, n)[:, None]
    v = pick * (1 - t) + centre * t
    r, d = hp.vec2ang(v / np.linalg.norm(v, axis=1)[:, None], lonlat=True)
    ra.append(r)
    dec.append(d)
    size = math.degrees(NEIGHBOURHOOD_BOUND / nside)
    near = rng.uniform(0, min(1.0, size), n)
    ra.append(rng.uniform(0, 360, n))
    dec.append(np.where(np.arange(n) % 2 == 0, 90 - near, -90 + near))
    ra.append(rng.uniform(0, 360, n))
    dec.append(np.sign(rng.uniform(-1, 1, n)) * math.degrees(math.asin(2 / 3)) + rng.normal(0, size / 10, n))
    return np.mod(np.concatenate(ra), 360), np.clip(np.concatenate(dec), -90, 90)


def _escapes(order: int, factor: float, rng: np.random.Generator) -> int:
    """Points at ``factor`` times the bound (in 24 directions) outside the start's pixel and neighbours."""
    nside = 1 << order
    ra, dec = _test_points(rng, order, 1500)
    start = SkyCoord(ra * u.deg, dec * u.deg)
    pix = hp.ang2pix(nside, ra, dec, nest=True, lonlat=True)
    block = np.concatenate([pix[:, None], hp.get_all_neighbours(nside, pix, nest=True).T], axis=1)
    out = 0
    for angle in np.linspace(0, 360, 24, endpoint=False):
        moved = start.directional_offset_by(angle * u.deg, factor * neighbourhood_radius(order) * u.deg)
        p2 = hp.ang2pix(nside, moved.ra.deg, moved.dec.deg, nest=True, lonlat=True)
        out += int((~(block == p2[:, None]).any(axis=1)).sum())
    return out


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 17, 24])
def test_neighbourhood_bound_holds(order: int) -> None:
    rng = np.random.default_rng(order)
    for factor in (0.5, 0.999, 1.0):
        assert _escapes(order, factor, rng) == 0, factor
    if order >= 1:  # the check has teeth: 30 % beyond the bound, points do escape
        assert _escapes(order, 1.3, rng) > 0


def test_search_order_uses_the_bound() -> None:
    for k in (0, 3, 11, 20):
        r = neighbourhood_radius(k)
        assert search_order(np.array([r, r * 1.0001, r / 2.0001])).tolist() == [k, k - 1, k + 1]
    assert search_order(np.array([0.0, 1e-9])).tolist() == [24, 24]
    assert search_order(np.array([neighbourhood_radius(0) * 1.001])).tolist() == [-1]


# --------------------------------------------------------------------------- shapes against brute force


def brute_circle(centre: SkyCoord, r90: float, src: SkyCoord) -> tuple[FloatArray, FloatArray]:
    """Separation (deg) and Gaussian containment of sources in a 90 % circle."""
    sep = centre.separation(src).deg
    sigma = r90 / K90
    return sep, -np.expm1(-0.5 * (sep / sigma) ** 2)


def brute_in_source_ellipse(src: SkyCoord, alert: SkyCoord, a: FloatArray, b: FloatArray, pa: FloatArray) -> FloatArray:
    """1.0 / 0.0 / NaN: the alert inside / outside / unknown for each source's ellipse (astropy offsets)."""
    d = src.separation(alert).deg
    theta = np.radians(src.position_angle(alert).deg - pa)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = ((d * np.cos(theta) / a) ** 2 + (d * np.sin(theta) / b) ** 2 <= 1.0).astype(float)
    inside[~np.isfinite(a)] = np.nan
    return inside


ICECUBE_CIRCLES = [
    "voevent/icecube_amon/finkmm_icecube_voevent_number_3028.xml",
    "voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml",
    "voevent/icecube_amon/sample_astrotrack_alert.xml",
    "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json",
    "gcn-json/km3net/alert.example.json",
]


@pytest.mark.parametrize("rel", ICECUBE_CIRCLES)
def test_neutrino_track_against_4fgl(catalogs: dict[str, Catalog], rel: str) -> None:
    """A real neutrino notice and every 4FGL source, decided independently with astropy."""
    alert = notice(rel)
    assert isinstance(alert.region, Circle)
    assert alert.region.containment == 0.9
    (ann,) = CatalogAnnotator([catalogs["4fgl-dr4"]], max_matches_per_catalog=10_000).annotate([alert])
    got = {m.source_id: m for m in matches_of(ann, "4fgl-dr4")}

    t = fermi_table()
    src = SkyCoord(f64(t["RAJ2000"]) * u.deg, f64(t["DEJ2000"]) * u.deg)
    centre = SkyCoord(alert.region.ra * u.deg, alert.region.dec * u.deg)
    sep, containment = brute_circle(centre, alert.region.radius, src)
    in_err = brute_in_source_ellipse(
        src, centre, f64(t["Conf_95_SemiMajor"]), f64(t["Conf_95_SemiMinor"]), f64(t["Conf_95_PosAng"])
    )
    names = [s.strip() for s in t["Source_Name"].astype(str)]
    expected = {names[i] for i in np.flatnonzero((sep <= alert.region.radius) | (in_err == 1))}
    assert set(got) == expected
    assert ann is not None
    assert ann.properties["n_4fgl-dr4"] == len(expected)
    for i in (names.index(n) for n in expected):
        m = got[names[i]]
        assert m.source_in_region == (sep[i] <= alert.region.radius)
        assert m.alert_in_source_error == (None if np.isnan(in_err[i]) else bool(in_err[i]))
        assert m.separation == pytest.approx(sep[i], abs=1e-10)
        assert m.containment == pytest.approx(containment[i], abs=1e-12)
    seps = [m.separation for m in matches_of(ann, "4fgl-dr4")]
    assert seps == sorted(seps)


def recentred(alert: Alert, ra: float, dec: float) -> Alert:
    """The real alert with its region moved to ``(ra, dec)`` (rectangles: corners shifted alike)."""
    r = alert.region
    if isinstance(r, Rectangle):
        dra, ddec = ra - r.ra, dec - r.dec
        corners = tuple((c[0] + dra, c[1] + ddec) for c in r.corners)
        return replace(alert, region=replace(r, ra=ra, dec=dec, corners=corners))
    assert r is not None
    return replace(alert, region=replace(r, ra=ra, dec=dec))


@pytest.mark.parametrize(
    "rel",
    [
        "gcn-json/chime/frb.detection.example.json",
        "gcn-json/dsa110/frb.detection.example.json",
        "gcn-json/maxi/gsc.unknown.ellipse.example.json",
    ],
)
def test_ellipse_regions_against_brute_force(catalogs: dict[str, Catalog], rel: str) -> None:
    """Real ellipses re-centred near 50MGC galaxies; membership and containment from astropy offsets."""
    base = notice(rel)
    ell = base.region
    assert isinstance(ell, Ellipse)
    assert ell.containment == 0.9
    cat = catalogs["50mgc"]
    rng = np.random.default_rng(3)
    ra, dec = jittered(rng, cat.ra, cat.dec, 400, ell.semi_major)
    alerts = [recentred(base, float(r), float(d)) for r, d in zip(ra, dec, strict=True)]
    anns = CatalogAnnotator([cat], max_matches_per_catalog=10_000).annotate(alerts)

    centres = SkyCoord(ra * u.deg, dec * u.deg)
    srcs = SkyCoord(cat.ra * u.deg, cat.dec * u.deg)
    i1, i2, _, _ = search_around_sky(centres, srcs, 1.01 * ell.semi_major * u.deg)
    sep = centres[i1].separation(srcs[i2]).deg
    theta = np.radians(centres[i1].position_angle(srcs[i2]).deg - ell.position_angle)
    k = math.sqrt(-2 * math.log(1 - 0.9))
    m2 = (sep * np.cos(theta) / (ell.semi_major / k)) ** 2 + (sep * np.sin(theta) / (ell.semi_minor / k)) ** 2
    containment = -np.expm1(-0.5 * m2)
    inside = containment <= 0.9
    expected = {
        (int(a), str(cat.source_id[s])): c for a, s, c in zip(i1[inside], i2[inside], containment[inside], strict=True)
    }
    got = {(n, m.source_id): m for n, ann in enumerate(anns) for m in matches_of(ann, "50mgc")}
    assert set(got) == set(expected)
    t = Table.read(BUNDLED_DIR / "galaxies" / "50MGC_catalog_short.fits")
    bestdist = dict(zip([n.strip() for n in t["objname"].astype(str)], f64(t["bestdist"]).tolist(), strict=True))
    assert len(expected) > 20
    assert (~inside).sum() > 20
    for key, c in expected.items():
        assert got[key].source_in_region is True
        assert got[key].alert_in_source_error is None
        assert got[key].containment == pytest.approx(c, abs=1e-9)
        d = bestdist[key[1]]
        assert got[key].distance == (None if np.isnan(d) else d)


def tan_inside(
    ra0: float, dec0: float, corners: list[tuple[float, float]], ra: FloatArray, dec: FloatArray
) -> npt.NDArray[np.bool_]:
    """Point in polygon by ray casting in the gnomonic (TAN) projection, where great circles are straight."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [0.0, 0.0]
    w.wcs.cdelt = [-1.0, 1.0]
    px, py = w.wcs_world2pix(np.array([c[0] for c in corners]), np.array([c[1] for c in corners]), 0)
    x, y = w.wcs_world2pix(ra, dec, 0)
    inside = np.zeros(ra.size, dtype=bool)
    n = len(corners)
    for i in range(n):
        x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xc)
    return inside


def test_maxi_rectangle_against_brute_force(catalogs: dict[str, Catalog]) -> None:
    base = notice("gcn-json/maxi/gsc.unknown.rectangle.example.json")
    assert isinstance(base.region, Rectangle)
    cat = catalogs["50mgc"]
    rng = np.random.default_rng(8)
    nearby = np.abs(cat.dec) < 60
    ra, dec = jittered(rng, cat.ra[nearby], cat.dec[nearby], 400, 0.5)
    alerts = [recentred(base, float(r), float(d)) for r, d in zip(ra, dec, strict=True)]
    anns = CatalogAnnotator([cat], max_matches_per_catalog=10_000).annotate(alerts)
    n_in = n_out = 0
    for alert, ann in zip(alerts, anns, strict=True):
        rect = alert.region
        assert isinstance(rect, Rectangle)
        centre = SkyCoord(rect.ra * u.deg, rect.dec * u.deg)
        near = centre.separation(SkyCoord(cat.ra * u.deg, cat.dec * u.deg)).deg < 3.0
        idx = np.flatnonzero(near)
        inside = tan_inside(rect.ra, rect.dec, list(rect.corners), cat.ra[idx], cat.dec[idx])
        got = {m.source_id for m in matches_of(ann, "50mgc")}
        assert got == set(cat.source_id[idx[inside]].tolist())
        assert all(m.source_in_region is True and m.containment is None for m in matches_of(ann, "50mgc"))
        n_in += int(inside.sum())
        n_out += int((~inside).sum())
    assert n_in > 50
    assert n_out > 50


@pytest.mark.parametrize(
    ("rel", "name"),
    [
        ("voevent/swift/gwcelery_swift_grb_gcn.xml", "4fgl-dr4"),
        ("gcn-json/maxi/gsc.unknown.noerror.example.json", "4fgl-dr4"),
        ("gcn-json/icecube/lvk_nu_track_search.example.json", "icecat-1"),
        ("voevent/swift/finkmm_swift_voevent_number_393.xml", "swift-grb"),
    ],
)
def test_alert_inside_source_errors(catalogs: dict[str, Catalog], rel: str, name: str) -> None:
    """Real small-circle and point alerts re-centred near sources with their own error ellipses."""
    base = notice(rel)
    cat = catalogs[name]
    rng = np.random.default_rng(21)
    scale = np.nanmedian(cat.err_semi_major) if cat.err_semi_major is not None else 1.0
    ra, dec = jittered(rng, cat.ra, cat.dec, 500, float(scale))
    alerts = [recentred(base, float(r), float(d)) for r, d in zip(ra, dec, strict=True)]
    anns = CatalogAnnotator(list(catalogs.values()), max_matches_per_catalog=10_000).annotate(alerts)

    a, b, pa = independent_errors(name, cat)
    srcs = SkyCoord(cat.ra * u.deg, cat.dec * u.deg)
    point = isinstance(base.region, Point)
    r90 = 0.0 if point else base.region.radius  # type: ignore[union-attr]
    n_err = 0
    for alert, ann in zip(alerts, anns, strict=True):
        assert alert.region is not None
        centre = SkyCoord(alert.region.ra * u.deg, alert.region.dec * u.deg)
        in_err = brute_in_source_ellipse(srcs, centre, a, b, pa)
        sep = centre.separation(srcs).deg
        in_region = np.zeros(len(cat), bool) if point else sep <= r90
        expected = set(np.flatnonzero((in_err == 1) | in_region).tolist())
        got = {m.source_id: m for m in matches_of(ann, name)}
        assert set(got) == {str(cat.source_id[i]) for i in expected}
        for i in expected:
            m = got[str(cat.source_id[i])]
            assert m.alert_in_source_error == (None if np.isnan(in_err[i]) else bool(in_err[i]))
            assert m.source_in_region == (None if point else bool(in_region[i]))
        n_err += int(np.nansum(in_err))
        if point:  # a point is matched only against catalogs with per-source errors
            assert ann is not None
            assert {k for k in ann.properties if k.startswith("n_")} == {"n_4fgl-dr4", "n_icecat-1", "n_swift-grb"}
    assert n_err > 20


def independent_errors(name: str, cat: Catalog) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-source error ellipses (deg) read from the files without the loader."""
    if name == "4fgl-dr4":
        t = fermi_table()
        return f64(t["Conf_95_SemiMajor"]), f64(t["Conf_95_SemiMinor"]), f64(t["Conf_95_PosAng"])
    if name == "icecat-1":
        with (BUNDLED_DIR / "neutrino" / "IceCat-1_IceCube_Gold_Bronze_Tracks.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        east = np.array(
            [
                max(float(r["RA_ERR_PLUS"]), float(r["RA_ERR_MINUS"])) * math.cos(math.radians(float(r["DEC"])))
                for r in rows
            ]
        )
        north = np.array([max(float(r["DEC_ERR_PLUS"]), float(r["DEC_ERR_MINUS"])) for r in rows])
        return np.maximum(east, north), np.minimum(east, north), np.where(east > north, 90.0, 0.0)
    with (BUNDLED_DIR / "grb" / "swift_grb_table.tsv").open(encoding="latin-1", newline="") as fh:
        by_name = {"GRB " + r["GRB"]: r for r in csv.DictReader(fh, delimiter="\t")}
    radius = []
    for sid in cat.source_id:
        r = by_name[str(sid)]
        xrt = r["XRT RA (J2000)"] not in ("", "n/a")
        value = r["XRT 90% Error Radius [arcsec]"] if xrt else r["BAT 90% Error Radius [arcmin]"]
        radius.append(np.nan if value in ("", "n/a") else float(value) / (3600 if xrt else 60))
    rad = np.array(radius)
    return rad, rad, np.zeros(rad.size)


# --------------------------------------------------------------------------- the annotator


def test_annotator_protocol_and_ordering(catalogs: dict[str, Catalog]) -> None:
    annotator = CatalogAnnotator(list(catalogs.values()))
    assert isinstance(annotator, Annotator)
    assert (annotator.name, annotator.version, annotator.needs) == ("catalogs", "1.0", "localization")
    alerts = [a for _, a in real_alerts() if a.region is not None and a.skymap is None]
    anns = annotator.annotate(alerts)
    assert len(anns) == len(alerts)
    for ann in anns:
        assert ann is not None
        assert ann.annotator == "catalogs"
        assert ann.status == "ok"
        keys = [(m.catalog, m.separation) for m in ann.matches]
        assert keys == sorted(keys)
        for cat in {m.catalog for m in ann.matches}:
            assert len(matches_of(ann, cat)) == min(50, int(ann.properties[f"n_{cat}"]))


def test_cap_keeps_the_nearest_and_counts_all(catalogs: dict[str, Catalog]) -> None:
    alert = notice("voevent/icecube_amon/sample_cascade.xml")  # 44 deg 90 % circle: hundreds of sources
    (skipped,) = CatalogAnnotator(list(catalogs.values())).annotate([alert])
    assert skipped is not None
    assert not skipped.matches
    assert all(skipped.properties[f"skipped_{name}"] for name in catalogs)  # ... and say so
    unlimited = [load_catalog(c.spec.model_copy(update={"max_region_radius": None})) for c in catalogs.values()]
    (full,) = CatalogAnnotator(unlimited, max_matches_per_catalog=100_000).annotate([alert])
    (capped,) = CatalogAnnotator(unlimited, max_matches_per_catalog=5).annotate([alert])
    assert full is not None
    assert capped is not None
    assert capped.properties == full.properties
    for name in catalogs:
        everything = matches_of(full, name)
        assert len(everything) == full.properties[f"n_{name}"]
        assert matches_of(capped, name) == everything[:5]
        assert len(everything) > 5


def test_unstated_containment_is_taken_as_90_percent(catalogs: dict[str, Catalog]) -> None:
    alert = notice("voevent/fermi/gwcelery_fermi_subthresh_grb_gcn.xml")
    assert isinstance(alert.region, Circle)
    assert alert.region.containment is None
    (ann,) = CatalogAnnotator([catalogs["4fgl-dr4"]]).annotate([alert])
    assert ann is not None
    assert ann.properties["region_containment_assumed"] is True
    assert ann.properties["region_radius_90_deg"] == alert.region.radius
    gbm = notice("gcn-json/fermi/gbm/trigger.ground1.example.json")  # 68 % circle, scaled to 90 %
    assert isinstance(gbm.region, Circle)
    assert gbm.region.containment == 0.68
    (ann,) = CatalogAnnotator([catalogs["4fgl-dr4"]]).annotate([gbm])
    assert ann is not None
    k68 = math.sqrt(-2 * math.log(1 - 0.68))
    assert ann.properties["region_radius_90_deg"] == pytest.approx(gbm.region.radius * K90 / k68)
    assert ann.properties["region_containment_assumed"] is False


def test_stated_90_percent_radius_is_used_over_scaling(catalogs: dict[str, Catalog]) -> None:
    alert = notice("gcn-json/_unmerged_pr_examples/pr161/classic/sk_sn/alert.example.json")
    assert isinstance(alert.region, Circle)
    (ann,) = CatalogAnnotator([catalogs["4fgl-dr4"]]).annotate([alert])
    assert ann is not None
    assert ann.properties["region_radius_90_deg"] == alert.region.radius == 0.91


def test_alert_without_localization_is_skipped(catalogs: dict[str, Catalog]) -> None:
    alert = notice("voevent/snews/gwcelery_snews_gcn.xml")
    assert alert.region is None
    assert alert.skymap is None
    (ann,) = CatalogAnnotator(list(catalogs.values())).annotate([alert])
    assert ann == Annotation("catalogs", "1.0", status="skipped", reason="alert has no localization")


def test_messengers_select_catalogs(catalogs: dict[str, Catalog]) -> None:
    alert = notice("voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml")
    (nu,) = CatalogAnnotator(list(catalogs.values())).annotate([alert])
    assert nu is not None
    assert {k for k in nu.properties if k.startswith("n_")} == {f"n_{n}" for n in catalogs}
    as_gw = replace(alert, messenger="gw")
    (gw,) = CatalogAnnotator(list(catalogs.values())).annotate([as_gw])
    assert gw is not None
    serving = {n for n, c in catalogs.items() if "gw" in c.spec.serves}
    assert serving == {"50mgc", "icecat-1", "swift-grb"}
    assert {k for k in gw.properties if k.startswith("n_")} == {f"n_{n}" for n in serving}


def test_skymap_alerts_use_the_skymap_matcher(catalogs: dict[str, Catalog]) -> None:
    skymap = pytest.importorskip("annotators.skymap")
    if not hasattr(skymap, "match_catalog_skymap"):
        pytest.skip("annotators.skymap.match_catalog_skymap not written yet")
    alert = notice("igwn/kafka-json/MS181101ab-preliminary.json")
    assert alert.skymap is not None
    (ann,) = CatalogAnnotator(list(catalogs.values()), max_matches_per_catalog=7).annotate([alert])
    assert ann is not None
    assert ann.status == "ok"
    direct, total = skymap.match_catalog_skymap(catalogs["50mgc"], alert.skymap, level=0.9)
    assert ann.properties["n_50mgc"] == len(direct) == total > 7
    assert matches_of(ann, "50mgc") == direct[:7]
    assert "n_4fgl-dr4" not in ann.properties  # 4FGL does not serve GW alerts


# --------------------------------------------------------------------------- bad catalogs


def spec_of(bundled: str, **changes: object) -> CatalogSpec:
    spec = next(s for s in bundled_specs() if s.name == bundled)
    return spec.model_copy(update=changes)


def test_renamed_fits_column_names_file_and_column(tmp_path: Path) -> None:
    t = Table.read(BUNDLED_DIR / "fermi-lat" / "table-4LAC-DR3-l.fits")
    t.rename_column("DEJ2000", "DECJ2000")
    path = tmp_path / "4lac-l.fits"
    t.write(path)
    with pytest.raises(CatalogError) as info:
        load_catalog(spec_of("4lac-dr3", paths=(str(path),)))
    assert str(path) in str(info.value)
    assert "'DEJ2000'" in str(info.value)


def test_removed_csv_column_names_file_and_column(tmp_path: Path) -> None:
    src = BUNDLED_DIR / "blazars" / "3hsp.csv"
    path = tmp_path / "3hsp.csv"
    text = src.read_text(encoding="utf-8").replace(" , Dec , ", " , Declination , ", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"column 'Dec' \(dec\)") as info:
        load_catalog(spec_of("3hsp", paths=(str(path),)))
    assert str(path) in str(info.value)


def copy_with_line(tmp_path: Path, rel: str, line: int, old: str, new: str) -> Path:
    src = BUNDLED_DIR / rel
    lines = src.read_text(encoding="utf-8").split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path = tmp_path / src.name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "column"),
    [
        ("00 04 16.17", "00 64 16.17", "RA (J2000.0)"),  # 64 minutes
        ("+46 15 18.21", "+46 15 1B.21", "Dec (J2000.0)"),  # not a number
        ("+46 15 18.21", "+96 15 18.21", "Dec (J2000.0)"),  # beyond the pole
    ],
)
def test_malformed_sexagesimal_names_file_column_and_row(tmp_path: Path, old: str, new: str, column: str) -> None:
    path = copy_with_line(tmp_path, "blazars/romabzcat5_names_coords.csv", 11, old, new)
    with pytest.raises(CatalogError) as info:
        load_catalog(spec_of("roma-bzcat5", paths=(str(path),)))
    message = str(info.value)
    assert str(path) in message
    assert f"column {column!r}, data row 10" in message  # file line 11 is the 10th data row


@pytest.mark.parametrize(("field", "value"), [("RA", "north"), ("DEC", "95.5"), ("RA_ERR_PLUS", "-1.0")])
def test_malformed_number_names_file_column_and_row(tmp_path: Path, field: str, value: str) -> None:
    src = BUNDLED_DIR / "neutrino" / "IceCat-1_IceCube_Gold_Bronze_Tracks.csv"
    lines = src.read_text(encoding="utf-8").split("\n")
    header = lines[0].split(",")
    row = lines[10].split(",")
    row[header.index(field)] = value
    lines[10] = ",".join(row)
    path = tmp_path / src.name
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(spec_of("icecat-1", paths=(str(path),)))
    message = str(info.value)
    assert str(path) in message
    assert f"column {field!r}, data row 10" in message


def test_blank_position_is_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = copy_with_line(tmp_path, "blazars/romabzcat5_names_coords.csv", 11, "+46 15 18.21", "")
    with caplog.at_level(logging.WARNING, logger="annotators.catalogs"):
        cat = load_catalog(spec_of("roma-bzcat5", paths=(str(path),)))
    assert (len(cat), cat.n_dropped) == (3560, 1)
    assert "5BZQJ0004+4615" not in set(cat.source_id.tolist())
    assert any("1 row(s) without a position dropped" in r.getMessage() for r in caplog.records)


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(spec_of("icecat-1", paths=(str(tmp_path / "nowhere.csv"),)))


def test_ragged_table_is_refused_unless_declared(tmp_path: Path) -> None:
    path = tmp_path / "swift.tsv"
    shutil.copyfile(BUNDLED_DIR / "grb" / "swift_grb_table.tsv", path)
    with pytest.raises(CatalogError, match="swift.tsv"):
        load_catalog(spec_of("swift-grb", paths=(str(path),), pad_short_rows=False))


def write_yaml(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"catalogs": entries}, sort_keys=False), encoding="utf-8")
    return path


def test_unknown_yaml_keys_are_refused(tmp_path: Path) -> None:
    entry = spec_of("icecat-1").to_yaml_dict(relative_to=BUNDLED_DIR)
    typo = dict(entry, propertis={"energy": "ENERGY"})
    with pytest.raises(CatalogError, match="propertis"):
        read_specs(write_yaml(tmp_path / "typo.yaml", [typo]))
    nested = dict(entry, error=dict(entry["error"], containmnet=0.9))
    with pytest.raises(CatalogError, match="containmnet"):
        read_specs(write_yaml(tmp_path / "nested.yaml", [nested]))
    with pytest.raises(CatalogError, match="name"):
        read_specs(write_yaml(tmp_path / "name.yaml", [dict(entry, name="IceCat 1")]))


def test_yaml_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    shutil.copyfile(BUNDLED_DIR / "neutrino" / "IceCat-1_IceCube_Gold_Bronze_Tracks.csv", folder / "data" / "ic.csv")
    spec = spec_of("icecat-1", name="my-icecat", paths=(str(folder / "data" / "ic.csv"),))
    doc = spec.to_yaml_dict(relative_to=folder)
    assert doc["paths"] == ["data/ic.csv"]
    (read,) = read_specs(write_yaml(folder / "catalogs.yaml", [doc]))
    assert read == spec
    assert len(load_catalog(read)) == 348


def test_max_region_radius_skips_and_says_so(catalogs: dict[str, Catalog]) -> None:
    alert = notice("voevent/icecube_amon/sample_cascade.xml")  # 44 deg 90 % circle
    limited = load_catalog(spec_of("4lac-dr3", max_region_radius=10.0))
    unlimited = load_catalog(spec_of("3hsp", max_region_radius=None))
    (ann,) = CatalogAnnotator([limited, unlimited]).annotate([alert])
    assert ann is not None
    assert "n_4lac-dr3" not in ann.properties
    assert "max_region_radius 10 deg" in str(ann.properties["skipped_4lac-dr3"])
    assert ann.properties["n_3hsp"] > 0
    assert not matches_of(ann, "4lac-dr3")

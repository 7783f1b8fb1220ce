# SPDX-License-Identifier: Apache-2.0
"""The sky-map machinery of ``annotators.skymap`` against ligo.skymap, on real data only.

Sky maps: every file of ``tests/data/notices/igwn/skymaps`` (BAYESTAR
multi-order maps with distance layers, a GW x GBM combined map, a Swift
BAT-GUANO map, a small-area map and a flat RING Fermi GBM map) and the maps
carried inside the real IGWN notices of ``tests/data/notices/igwn``.  Each is
read by ligo.skymap (``read_sky_map(..., moc=True)``) and by our decoder from
the same bytes.  Points: every galaxy of the 50MGC catalog and, to exercise the
tie-breaking of equal densities, the centre of every pixel of the map.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import healpy as hp
import numpy as np
import numpy.typing as npt
import pytest

from annotators import skymap as sm
from broker.annotate import Annotator
from broker.formats import parse
from broker.formats.skymap import decode_fits_skymap
from broker.model import Alert, SkyMap
from broker.replay import guess_topic

DATA = Path(__file__).parent / "data"
SKYMAP_DIR = DATA / "notices" / "igwn" / "skymaps"
IGWN_NOTICES = DATA / "notices" / "igwn"
GALAXIES = Path("/work/shared/data/catalogs/galaxies/50MGC_catalog_short.fits")
FERMI_NOTICE = DATA / "notices" / "voevent" / "fermi" / "gwcelery_fermi_grb_gcn.xml"

RTOL = 1e-6
SKYMAP_FILES = sorted(p for p in SKYMAP_DIR.iterdir() if p.name.endswith((".fits", ".fits.gz")))
NOTICE_FILES = sorted(
    p for p in IGWN_NOTICES.rglob("*") if p.parent.name in ("kafka-json", "kafka-avro") and p.is_file()
)


# --------------------------------------------------------------------------- real data loading


@dataclass(frozen=True)
class Galaxies:
    """The 50MGC galaxies as a :class:`annotators.skymap.CatalogLike`."""

    name: str
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    source_id: npt.NDArray[np.str_]
    distance: npt.NDArray[np.float64] | None
    types: npt.NDArray[np.str_]

    def properties_of(self, i: int) -> dict[str, bool | int | float | str]:
        return {"best_type": str(self.types[i])}

    def __len__(self) -> int:
        return int(self.ra.size)


@pytest.fixture(scope="module")
def galaxies() -> Galaxies:
    if not GALAXIES.exists():
        pytest.skip(f"galaxy catalog {GALAXIES} not available")
    from astropy.table import Table

    t = Table.read(GALAXIES)
    dist = np.ma.filled(np.ma.asarray(t["bestdist"], dtype=np.float64), np.nan)
    return Galaxies(
        name="50mgc",
        ra=np.asarray(t["ra"], dtype=np.float64),
        dec=np.asarray(t["dec"], dtype=np.float64),
        source_id=np.char.strip(np.asarray(t["objname"]).astype(str)),
        distance=np.asarray(dist, dtype=np.float64),
        types=np.char.strip(np.asarray(t["best_type"]).astype(str)),
    )


def _notice_fits(path: Path) -> list[tuple[str, bytes]]:
    """Raw FITS bytes of the sky maps inside a notice: ``event.skymap`` then ``external_coinc.combined_skymap``."""
    doc: Any
    if path.suffix == ".avro":
        import fastavro

        (doc,) = list(fastavro.reader(io.BytesIO(path.read_bytes())))
    else:
        doc = json.loads(path.read_bytes())

    def raw(value: Any) -> bytes:
        return value if isinstance(value, bytes) else base64.b64decode(value)

    out: list[tuple[str, bytes]] = []
    event = doc.get("event") or {}
    if event.get("skymap") is not None:
        out.append(("event", raw(event["skymap"])))
    coinc = doc.get("external_coinc") or {}
    if coinc.get("combined_skymap") is not None:
        out.append(("combined", raw(coinc["combined_skymap"])))
    return out


@dataclass(frozen=True)
class RealMap:
    """One real sky map, read by ligo.skymap and by us from the same bytes."""

    label: str
    path: Path  # a FITS file holding exactly the bytes our SkyMap was decoded from
    skymap: SkyMap


def _notice_maps(tmp: Path) -> Iterator[RealMap]:
    for path in NOTICE_FILES:
        alert = parse(path.read_bytes(), guess_topic(path))
        ours = [alert.skymap, *(r.skymap for r in alert.related)]
        for (kind, fits_bytes), skymap in zip(_notice_fits(path), [m for m in ours if m is not None], strict=True):
            f = tmp / f"{path.parent.name}-{path.stem}-{kind}.fits"
            f.write_bytes(fits_bytes)
            yield RealMap(f"{path.parent.name}/{path.name}:{kind}", f, skymap)


@pytest.fixture(scope="module")
def notice_maps(tmp_path_factory: pytest.TempPathFactory) -> list[RealMap]:
    maps = list(_notice_maps(tmp_path_factory.mktemp("notice-skymaps")))
    assert len(maps) >= 10  # 5 JSON + 4 Avro user-guide alerts, S230518h, MS230518e, the combined GW x GBM map
    return maps


def _file_map(path: Path) -> RealMap:
    return RealMap(path.name, path, decode_fits_skymap(path.read_bytes(), path.name))


def _ligo_table(path: Path) -> Any:
    from ligo.skymap.io.fits import read_sky_map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_sky_map(str(path), moc=True)


def _ligo_crossmatch(
    path: Path, ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64], *, with_distance: bool = False
) -> Any:
    """ligo.skymap's crossmatch of the map in ``path`` with the points (no point distances).

    Unless ``with_distance``, the map's DISTMU/DISTSIGMA/DISTNORM columns are dropped first: ligo.skymap then
    skips its 3D grid (seconds per map), and the 2D results are unchanged (the sort breaks density ties by
    UNIQ, the first column, before any distance column).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from ligo.skymap.postprocess.crossmatch import crossmatch

    table = _ligo_table(path)
    if not with_distance:
        table = table[["UNIQ", "PROBDENSITY"]]
    return crossmatch(table, SkyCoord(ra * u.deg, dec * u.deg), contours=(0.5, 0.9))


def _pixel_centres(skymap: SkyMap) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    order, ipix = sm.uniq_to_order_ipix(skymap.uniq)
    ra = np.empty(order.size)
    dec = np.empty(order.size)
    for o in np.unique(order):  # one healpy call per order
        sel = order == o
        ra[sel], dec[sel] = hp.pix2ang(1 << int(o), ipix[sel], nest=True, lonlat=True)
    return ra, dec


def _area_deg2(uniq: npt.NDArray[np.int64]) -> float:
    order, _ = sm.uniq_to_order_ipix(uniq)
    return float(np.sum(np.pi / (3.0 * 4.0 ** order.astype(np.float64)))) * (180.0 / np.pi) ** 2


def _ranges(uniq: npt.NDArray[np.int64], depth: int) -> npt.NDArray[np.int64]:
    """Pixels as merged half-open ranges of nested indices at ``depth`` (a canonical form of a coverage)."""
    order, ipix = sm.uniq_to_order_ipix(uniq)
    shift = 2 * (depth - order)
    start, end = ipix << shift, (ipix + 1) << shift
    i = np.argsort(start)
    start, end = start[i], end[i]
    assert np.all(start[1:] >= end[:-1]), "pixels overlap"
    new = np.concatenate(([True], start[1:] != end[:-1]))
    last = np.concatenate((np.flatnonzero(new)[1:] - 1, [start.size - 1]))
    return np.stack((start[new], end[last]), axis=1)


def _contains(moc: npt.NDArray[np.int64], ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64]) -> Any:
    """Whether each point lies in the MOC."""
    depth = int(sm.uniq_to_order_ipix(moc)[0].max())
    r = _ranges(moc, depth)
    pix = hp.ang2pix(1 << depth, ra, dec, nest=True, lonlat=True)
    k = np.searchsorted(r[:, 0], pix, side="right") - 1
    return (k >= 0) & (pix < r[np.clip(k, 0, None), 1])


# --------------------------------------------------------------------------- crossmatch and contour areas vs ligo


@pytest.mark.parametrize("path", SKYMAP_FILES, ids=lambda p: p.name)
def test_crossmatch_equals_ligo_on_skymap_files(path: Path, galaxies: Galaxies) -> None:
    pytest.importorskip("ligo.skymap")
    _check_against_ligo(_file_map(path), galaxies, with_distance=True)


def test_crossmatch_equals_ligo_on_notice_skymaps(notice_maps: list[RealMap], galaxies: Galaxies) -> None:
    pytest.importorskip("ligo.skymap")
    for m in notice_maps:
        _check_against_ligo(m, galaxies)


def _check_against_ligo(m: RealMap, galaxies: Galaxies, *, with_distance: bool = False) -> None:
    sm.clear_skymap_index_cache()
    table = _ligo_table(m.path)
    assert len(table) == m.skymap.uniq.size, m.label  # both read the same pixels
    cra, cdec = _pixel_centres(m.skymap)
    ra = np.concatenate((galaxies.ra, cra))
    dec = np.concatenate((galaxies.dec, cdec))
    ours = sm.crossmatch(m.skymap, ra, dec)
    theirs = _ligo_crossmatch(m.path, ra, dec, with_distance=with_distance)
    assert ours.covered.all(), m.label
    for field in ("searched_prob", "searched_area", "probdensity"):
        np.testing.assert_allclose(
            getattr(ours, field), np.asarray(getattr(theirs, field)), rtol=RTOL, atol=0, err_msg=f"{m.label} {field}"
        )
    regions = sm.credible_regions(m.skymap, (0.5, 0.9))
    np.testing.assert_allclose([r.area for r in regions], theirs.contour_areas, rtol=RTOL, atol=0, err_msg=m.label)
    # pixel rows: the point's own pixel (a pixel centre maps to its own row)
    assert np.array_equal(ours.pixel[galaxies.ra.size :], np.arange(m.skymap.uniq.size)), m.label


def test_ties_are_broken_like_ligo() -> None:
    """Maps with many pixels of equal density (zeros) are searched in ligo.skymap's order, not any other."""
    pytest.importorskip("ligo.skymap")
    m = _file_map(SKYMAP_DIR / "gwcelery_swift_skymap.multiorder.fits")
    density = m.skymap.probdensity
    values, counts = np.unique(density, return_counts=True)
    tied = np.flatnonzero(np.isin(density, values[counts > 1]))
    assert tied.size > 10_000  # the Swift map has ~16 000 zero-density pixels
    ra, dec = _pixel_centres(m.skymap)
    ours = sm.crossmatch(m.skymap, ra[tied], dec[tied])
    theirs = _ligo_crossmatch(m.path, ra[tied], dec[tied])
    np.testing.assert_allclose(ours.searched_area, theirs.searched_area, rtol=RTOL, atol=0)
    # the other tie order (ascending NUNIQ) would give different searched areas for the same pixels
    stable = np.argsort(-density, kind="stable")
    area = np.cumsum(m.skymap.pixel_area[stable]) * (180 / np.pi) ** 2
    rank = np.empty_like(stable)
    rank[stable] = np.arange(stable.size)
    assert not np.allclose(area[rank[tied]], theirs.searched_area, rtol=RTOL, atol=0)


# --------------------------------------------------------------------------- MOCs


@pytest.mark.parametrize("path", SKYMAP_FILES, ids=lambda p: p.name)
def test_credible_region_mocs(path: Path, galaxies: Galaxies) -> None:
    skymap = _file_map(path).skymap
    idx = sm.skymap_index(skymap)
    prob = skymap.probability
    for region in sm.credible_regions(skymap, (0.5, 0.9)):
        moc = region.moc
        assert moc.dtype == np.int64
        assert np.all(np.diff(moc) > 0)  # sorted, unique
        order, ipix = sm.uniq_to_order_ipix(moc)
        # normalized: no complete set of 4 siblings left at any order
        for o in np.unique(order[order > 0]):
            _, counts = np.unique(ipix[order == o] >> 2, return_counts=True)
            assert counts.max() < 4, f"order {o} has a complete set of siblings"
        # the pixels whose greedy credible level is <= level (ligo.skymap's find_greedy_credible_levels)
        cls = np.empty(prob.size)
        greedy = np.argsort(-skymap.probdensity, kind="stable")
        cls[greedy] = np.cumsum(prob[greedy])
        included = skymap.uniq[cls <= region.level]
        assert included.size == idx.n_in_region(region.level)
        depth = idx.max_order
        if included.size == 0:
            assert moc.size == 0
            continue
        assert np.array_equal(_ranges(moc, depth), _ranges(included, depth))  # same coverage
        moc_area = _area_deg2(moc)
        assert moc_area == pytest.approx(_area_deg2(included), rel=1e-12)
        # consistency with the interpolated area: within one pixel (the next one in search order)
        n = included.size
        assert moc_area <= region.area * (1 + 1e-12)
        assert region.area <= moc_area + idx.cum_area[n] - idx.cum_area[n - 1] + 1e-9
        assert idx.cum_prob[n - 1] <= region.level < idx.cum_prob[n]
        # a galaxy is in the MOC exactly when its searched probability is <= level
        xm = sm.crossmatch(skymap, galaxies.ra, galaxies.dec)
        assert np.array_equal(_contains(moc, galaxies.ra, galaxies.dec), xm.searched_prob <= region.level)


@pytest.mark.parametrize("path", SKYMAP_FILES, ids=lambda p: p.name)
def test_normalize_moc_merges_real_pixels(path: Path) -> None:
    skymap = _file_map(path).skymap
    # the whole map is the whole sky: it normalizes to the 12 base pixels
    assert np.array_equal(sm.normalize_moc(skymap.uniq), np.arange(4, 16))
    # the 90 % region split into its children one order deeper normalizes back to the same MOC
    region = sm.credible_regions(skymap, (0.9,))[0].moc
    o, p = sm.uniq_to_order_ipix(region)
    children = ((p[:, None] << 2) + np.arange(4)).ravel() + (np.int64(4) << (2 * np.repeat(o + 1, 4)))
    assert np.array_equal(sm.normalize_moc(children), region)
    # dropping one child leaves its 3 siblings unmerged, and nothing else changes
    broken = sm.normalize_moc(children[1:])
    assert np.array_equal(broken, np.sort(np.concatenate((region[1:], children[1:4]))))


# --------------------------------------------------------------------------- distances and galaxy ranking


THREE_D = [p for p in SKYMAP_FILES if "bayestar" in p.name or "combined" in p.name]


@pytest.mark.parametrize("path", THREE_D, ids=lambda p: p.name)
def test_dp_dv_matches_ligo_conditional_pdf(path: Path, galaxies: Galaxies) -> None:
    pytest.importorskip("ligo.skymap")
    from ligo.skymap.distance import conditional_pdf

    skymap = _file_map(path).skymap
    assert skymap.distmu is not None
    assert skymap.distsigma is not None
    assert skymap.distnorm is not None
    xm = sm.crossmatch(skymap, galaxies.ra, galaxies.dec)
    assert galaxies.distance is not None
    r = galaxies.distance
    ours = sm.dp_dv(skymap, xm.pixel, r)
    p = xm.pixel
    with np.errstate(invalid="ignore"):
        theirs = skymap.probdensity[p] * conditional_pdf(r, skymap.distmu[p], skymap.distsigma[p], skymap.distnorm[p])
        theirs = theirs / r**2
    known = np.isfinite(r)
    assert np.isnan(ours[~known]).all()
    theirs = np.where(np.isfinite(theirs), theirs, 0.0)  # pixels without distance information
    np.testing.assert_allclose(ours[known], theirs[known], rtol=1e-9, atol=1e-300)  # subnormal underflow
    assert np.count_nonzero(ours[known] > 0) > 100


@pytest.mark.parametrize("path", THREE_D, ids=lambda p: p.name)
def test_rank_galaxies_3d(path: Path, galaxies: Galaxies) -> None:
    pytest.importorskip("ligo.skymap")
    from ligo.skymap.distance import conditional_pdf

    skymap = _file_map(path).skymap
    assert galaxies.distance is not None
    ranking = sm.rank_galaxies(skymap, galaxies.ra, galaxies.dec, galaxies.distance, top_n=None)
    # independent ranking from ligo.skymap's crossmatch and conditional_pdf
    theirs = _ligo_crossmatch(path, galaxies.ra, galaxies.dec)
    r = galaxies.distance
    eligible = np.flatnonzero((np.asarray(theirs.searched_prob) <= 0.9) & np.isfinite(r) & (r > 0))
    p = sm.crossmatch(skymap, galaxies.ra, galaxies.dec).pixel[eligible]
    with np.errstate(invalid="ignore"):
        score = theirs.probdensity[eligible] * conditional_pdf(
            r[eligible], skymap.distmu[p], skymap.distsigma[p], skymap.distnorm[p]  # type: ignore[index]
        ) / r[eligible] ** 2
    score = np.where(np.isfinite(score), score, 0.0)
    assert set(ranking.indices.tolist()) == set(eligible.tolist())
    assert np.all(np.diff(ranking.dp_dv) <= 0)  # best first
    lookup = dict(zip(eligible.tolist(), score.tolist(), strict=True))
    np.testing.assert_allclose(ranking.dp_dv, [lookup[i] for i in ranking.indices.tolist()], rtol=1e-9, atol=0)
    top = sm.rank_galaxies(skymap, galaxies.ra, galaxies.dec, galaxies.distance, top_n=5)
    assert np.array_equal(top.indices, ranking.indices[:5])
    # galaxies of unknown distance are never ranked
    assert np.isfinite(r[ranking.indices]).all()


def test_rank_galaxies_2d_by_probdensity(galaxies: Galaxies) -> None:
    skymap = _file_map(SKYMAP_DIR / "gwcelery_swift_skymap.multiorder.fits").skymap
    ranking = sm.rank_galaxies(skymap, galaxies.ra, galaxies.dec, galaxies.distance, top_n=None)
    xm = sm.crossmatch(skymap, galaxies.ra, galaxies.dec)
    assert np.isnan(ranking.dp_dv).all()
    assert np.array_equal(np.sort(ranking.indices), np.flatnonzero(xm.searched_prob <= 0.9))
    assert np.all(np.diff(xm.probdensity[ranking.indices]) <= 0)
    assert ranking.indices.size > 100


def test_match_catalog_skymap(galaxies: Galaxies) -> None:
    m = _file_map(SKYMAP_DIR / "userguide_bayestar.multiorder.fits")
    matches, total = sm.match_catalog_skymap(galaxies, m.skymap, level=0.9)
    xm = sm.crossmatch(m.skymap, galaxies.ra, galaxies.dec)
    inside = np.flatnonzero(xm.searched_prob <= 0.9)
    assert len(matches) == total == inside.size > 0
    limited, total_limited = sm.match_catalog_skymap(galaxies, m.skymap, level=0.9, limit=5)
    assert limited == matches[:5]
    assert total_limited == total
    assert {x.source_id for x in matches} == set(galaxies.source_id[inside].tolist())
    assert all(x.source_in_region and x.catalog == "50mgc" for x in matches)
    assert [x.containment for x in matches] == sorted(x.containment or 0.0 for x in matches)
    ra0, dec0 = m.skymap.max_position()
    first = matches[0]
    i = int(np.flatnonzero(galaxies.source_id == first.source_id)[0])
    assert first.probdensity == xm.probdensity[i]
    assert first.searched_area == xm.searched_area[i]
    assert first.separation == pytest.approx(
        np.degrees(hp.rotator.angdist([ra0, dec0], [first.ra, first.dec], lonlat=True))[0], abs=1e-9
    )
    assert first.properties == {"best_type": str(galaxies.types[i])}
    with_dist = [x for x in matches if x.distance is not None]
    assert with_dist
    assert all(x.dp_dv is not None and x.dp_dv >= 0 for x in with_dist)
    assert all(x.dp_dv is None for x in matches if x.distance is None)


# --------------------------------------------------------------------------- the annotator on real alerts


def _alerts() -> list[tuple[Path, Alert]]:
    out = []
    for path in NOTICE_FILES:
        alert = parse(path.read_bytes(), guess_topic(path))
        if alert.skymap is not None:
            out.append((path, alert))
    return out


def test_annotator_on_real_igwn_alerts(galaxies: Galaxies, tmp_path: Path) -> None:
    pytest.importorskip("ligo.skymap")
    alerts = _alerts()
    assert len(alerts) >= 10
    annotator = sm.SkyMapAnnotator(catalog=galaxies, top_n=20)
    results = annotator.annotate([a for _, a in alerts])
    assert len(results) == len(alerts)
    for (path, alert), ann in zip(alerts, results, strict=True):
        assert ann is not None
        assert ann.status == "ok"
        assert ann.annotator == "skymap"
        assert ann.version == "1.0"
        (_, fits_bytes), *_ = _notice_fits(path)
        f = tmp_path / "map.fits"
        f.write_bytes(fits_bytes)
        theirs = _ligo_crossmatch(f, galaxies.ra, galaxies.dec)
        assert [r.level for r in ann.credible_regions] == [0.5, 0.9]
        np.testing.assert_allclose([r.area for r in ann.credible_regions], theirs.contour_areas, rtol=RTOL, atol=0)
        props = ann.properties
        assert props["area_50_deg2"] == ann.credible_regions[0].area
        assert props["area_90_deg2"] == ann.credible_regions[1].area
        assert props["n_galaxies_90"] == int(np.count_nonzero(np.asarray(theirs.searched_prob) <= 0.9))
        assert props["galaxy_ranking"] == "dp_dv"
        assert props["has_distance"] is True
        assert alert.skymap is not None
        assert props["distmean_mpc"] == alert.skymap.distmean
        assert props["diststd_mpc"] == alert.skymap.diststd
        dpdv = [m.dp_dv for m in ann.matches]
        assert 0 < len(ann.matches) <= 20, path.name
        assert all(d is not None for d in dpdv)
        assert dpdv == sorted(dpdv, key=lambda d: -(d or 0.0))  # best first
        assert all(m.source_in_region and m.containment is not None and m.containment <= 0.9 for m in ann.matches)
        assert all(m.distance is not None and np.isfinite(m.distance) for m in ann.matches)


def test_annotator_reuses_the_index_and_skips_alerts_without_skymap(galaxies: Galaxies) -> None:
    (_, alert), *_ = _alerts()
    assert alert.skymap is not None
    sm.clear_skymap_index_cache()
    first = sm.skymap_index(alert.skymap)
    annotator = sm.SkyMapAnnotator(catalog=galaxies, top_n=3)
    assert isinstance(annotator, Annotator)
    assert (annotator.name, annotator.version, annotator.needs) == ("skymap", "1.0", "skymap")
    no_map = replace(alert, skymap=None)
    a, b, none = annotator.annotate([alert, alert, no_map])
    assert sm.skymap_index(alert.skymap) is first  # built once, reused by every call
    assert none is None
    assert a is not None
    assert b is not None
    assert a.matches == b.matches
    assert len(a.matches) == 3
    # another SkyMap object with the same content gets its own index (identity, not equality)
    copy = replace(alert.skymap)
    assert copy == alert.skymap
    assert sm.skymap_index(copy) is not first


def test_annotator_on_flat_ring_fermi_map(galaxies: Galaxies) -> None:
    """A Fermi GBM notice with its flat RING NSIDE=8 HEALPix map: 2D ranking by probdensity."""
    pytest.importorskip("ligo.skymap")
    notice = parse(FERMI_NOTICE.read_bytes(), guess_topic(FERMI_NOTICE))
    path = SKYMAP_DIR / "gwcelery_fermi_skymap.fits.gz"
    skymap = decode_fits_skymap(path.read_bytes(), path.name)
    assert skymap.source == "flat-ring-nside8"
    alert = replace(notice, skymap=skymap)
    (ann,) = sm.SkyMapAnnotator(catalog=galaxies, top_n=20).annotate([alert])
    assert ann is not None
    theirs = _ligo_crossmatch(path, galaxies.ra, galaxies.dec)
    np.testing.assert_allclose([r.area for r in ann.credible_regions], theirs.contour_areas, rtol=RTOL, atol=0)
    assert ann.properties["galaxy_ranking"] == "probdensity"
    assert ann.properties["has_distance"] is False
    assert "distmean_mpc" not in ann.properties
    assert ann.properties["max_order"] == 3
    dens = [m.probdensity or 0.0 for m in ann.matches]
    assert len(ann.matches) == 20
    assert dens == sorted(dens, reverse=True)
    assert all(m.dp_dv is None for m in ann.matches)
    # whole NSIDE=8 pixels: the 90 % MOC holds whole order-3 (or merged) pixels
    assert sm.uniq_to_order_ipix(ann.credible_regions[1].moc)[0].max() <= 3


def test_invalid_levels_are_refused() -> None:
    skymap = _file_map(SKYMAP_DIR / "gwcelery_rrt_small_area.fits").skymap
    with pytest.raises(ValueError, match="credible levels"):
        sm.credible_regions(skymap, (0.0, 0.9))
    with pytest.raises(ValueError, match="distance layers"):
        sm.dp_dv(skymap, np.array([0]), np.array([40.0]))


def test_uniq_to_order_ipix_is_exact_at_high_orders() -> None:
    """The last pixel of order 29 has a NUNIQ index a float log2 rounds into order 30."""
    skymap = _file_map(SKYMAP_DIR / "userguide_bayestar.multiorder.fits").skymap
    order, ipix = sm.uniq_to_order_ipix(skymap.uniq)
    np.testing.assert_array_equal(order, skymap.order)
    np.testing.assert_array_equal(ipix, skymap.ipix)
    for o in (27, 28, 29):
        last = (np.int64(4) << (2 * o)) + 12 * (np.int64(1) << (2 * o)) - 1
        got_order, got_ipix = sm.uniq_to_order_ipix(np.array([last, np.int64(4) << (2 * o)]))
        assert got_order.tolist() == [o, o]
        assert got_ipix.tolist() == [12 * (1 << (2 * o)) - 1, 0]

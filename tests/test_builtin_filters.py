# SPDX-License-Identifier: Apache-2.0
"""The built-in science filters (``filters/``) on every real notice, and at their thresholds.

Every notice of ``tests/data/notices`` that parses is annotated with catalog
matches, run through every built-in filter as the broker runs them
(:func:`broker.filtering.run_filter`), and its tags compared with
``tests/data/expected/filters/tags.json``, written from the notices' own
values.  Catalog matches come from the real catalogs (the copies bundled in
``annotators/data/catalogs``, byte for byte those of the project's shared
data folder ``/work/shared/data/catalogs``, which is read when the bundled
copies are absent), through :func:`annotate_with_catalogs`: the project's
catalog annotator (``annotators.crossmatch.CatalogAnnotator``) when it can be
imported, and always this module's small astropy stand-in, so both are held
to the same expectations.
"""

from __future__ import annotations

import csv
import dataclasses
import doctest
import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import numpy.typing as npt
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from broker.errors import RejectedNotice
from broker.filtering import NAME_RE, Filter, FilterResult, check_requirement, run_filter
from broker.formats import parse
from broker.model import Alert, Annotation, CatalogMatch, Circle, Ellipse, Point, Rectangle
from broker.replay import guess_topic
from filters import (
    BUILTIN_FILTERS,
    HighSignalnessNeutrino,
    NeutrinoBlazar,
    SignificantGW,
    WellLocalizedGRB,
    XrayNearGalaxy,
)
from filters.blocks import ONE_PER_YEAR_HZ, error_radius_90
from tests.corpus import NOTICES, notice_files

EXPECTED_FILE = Path(__file__).parent / "data" / "expected" / "filters" / "tags.json"
_BUNDLED_CATALOGS = Path(__file__).parents[1] / "annotators" / "data" / "catalogs"
CATALOG_DIR = _BUNDLED_CATALOGS if _BUNDLED_CATALOGS.is_dir() else Path("/work/shared/data/catalogs")
FILTER_MODULES = ("filters", "filters.blocks", "filters.neutrino", "filters.gw", "filters.grb", "filters.xray")
ALL_TAGS = frozenset(t for f in BUILTIN_FILTERS for t in f.tags)

Annotate = Callable[[Sequence[Alert]], list[Alert]]


# --------------------------------------------------------------------------- the corpus


@cache
def parsed_notices() -> dict[str, Alert]:
    """Every notice of the corpus that parses, by path relative to ``tests/data/notices``."""
    out: dict[str, Alert] = {}
    for path in notice_files():
        rel = str(path.relative_to(NOTICES))
        try:
            out[rel] = parse(path.read_bytes(), guess_topic(Path(rel)))
        except RejectedNotice:
            continue
    return out


@cache
def expectations() -> dict[str, Any]:
    return dict(json.loads(EXPECTED_FILE.read_text(encoding="utf-8")))


def expected_tags() -> dict[str, list[str]]:
    return {rel: sorted(v["tags"]) for rel, v in expectations()["notices"].items()}


def notice(rel: str) -> Alert:
    return parsed_notices()[rel]


# --------------------------------------------------------------------------- catalog annotation


@dataclass(frozen=True)
class _Catalog:
    name: str
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    ids: list[str]
    props: list[dict[str, str]]
    distance: npt.NDArray[np.float64] | None = None

    @property
    def coords(self) -> SkyCoord:
        return SkyCoord(self.ra * u.deg, self.dec * u.deg)


def _strs(column: Any) -> list[str]:
    return [str(v).strip() for v in column]


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, skipinitialspace=True))
    return [[cell.strip().strip('"').strip() for cell in row] for row in rows[1:] if row]


@cache
def _catalogs() -> tuple[_Catalog, ...]:
    """The real catalogs, with the names and properties of ``annotators/data/catalogs/bundled.yaml``."""
    out: list[_Catalog] = []
    with fits.open(CATALOG_DIR / "fermi-lat" / "gll_psc_v35.fit") as hdul:
        d = hdul["LAT_Point_Source_Catalog"].data
        out.append(
            _Catalog(
                "4fgl-dr4",
                np.asarray(d["RAJ2000"], float),
                np.asarray(d["DEJ2000"], float),
                _strs(d["Source_Name"]),
                [{"class": c} for c in _strs(d["CLASS1"])],
            )
        )
    ra: list[float] = []
    dec: list[float] = []
    ids: list[str] = []
    props: list[dict[str, str]] = []
    for part in ("h", "l"):
        with fits.open(CATALOG_DIR / "fermi-lat" / f"table-4LAC-DR3-{part}.fits") as hdul:
            d = hdul[1].data
            ra += list(d["RAJ2000"])
            dec += list(d["DEJ2000"])
            ids += _strs(d["Source_Name"])
            props += [{"class": c} for c in _strs(d["CLASS"])]
    out.append(_Catalog("4lac-dr3", np.asarray(ra, float), np.asarray(dec, float), ids, props))
    for name, path, id_col, ra_col in (
        ("3hsp", CATALOG_DIR / "blazars" / "3hsp.csv", 1, 3),
        ("roma-bzcat5", CATALOG_DIR / "blazars" / "romabzcat5_names_coords.csv", 1, 2),
    ):
        rows = _csv_rows(path)
        sky = SkyCoord([r[ra_col] for r in rows], [r[ra_col + 1] for r in rows], unit=(u.hourangle, u.deg))
        out.append(
            _Catalog(
                name, np.asarray(sky.ra.deg), np.asarray(sky.dec.deg), [r[id_col] for r in rows], [{} for _ in rows]
            )
        )
    with fits.open(CATALOG_DIR / "galaxies" / "50MGC_catalog_short.fits") as hdul:
        d = hdul[1].data
        out.append(
            _Catalog(
                "50mgc",
                np.asarray(d["ra"], float),
                np.asarray(d["dec"], float),
                _strs(d["objname"]),
                [{} for _ in range(len(d))],
                distance=np.asarray(d["bestdist"], float),
            )
        )
    return tuple(out)


def _to_90(radius: float, containment: float | None) -> float:
    """Radius at 90 % of a circular 2-D Gaussian region; an unstated containment is read as 90 %."""
    if containment is None or containment >= 1.0:
        return radius
    return radius * math.sqrt(math.log(10.0) / -math.log(1.0 - containment))


def _in_polygon(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], corners: npt.NDArray[np.float64]) -> Any:
    """Even-odd rule, vectorised over the points (x, y)."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(corners)
    for i in range(n):
        (x1, y1), (x2, y2) = corners[i], corners[(i - 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = (x2 - x1) * (y - y1) / (y2 - y1) + x1
        inside ^= crosses & (x < x_cross)
    return inside


def _inside(alert: Alert, centre: SkyCoord, cat: _Catalog, sep: npt.NDArray[np.float64]) -> tuple[Any, float]:
    """Mask of the catalog sources inside the alert's 90 % region, and the region's outer radius (deg)."""
    r = alert.region
    if isinstance(r, Circle):
        at90 = [x.radius for x in r.other_radii if math.isclose(x.containment, 0.9)]
        radius = r.radius if r.containment is not None and math.isclose(r.containment, 0.9) else None
        r90 = radius if radius is not None else (at90[0] if at90 else _to_90(r.radius, r.containment))
        return sep <= r90, r90
    offsets = centre.spherical_offsets_to(cat.coords)
    east, north = offsets[0].deg, offsets[1].deg
    if isinstance(r, Ellipse):
        scale = _to_90(1.0, r.containment)
        a, b, pa = r.semi_major * scale, r.semi_minor * scale, math.radians(r.position_angle)
        along = north * math.cos(pa) + east * math.sin(pa)
        across = -north * math.sin(pa) + east * math.cos(pa)
        return (sep <= a) & ((along / a) ** 2 + (across / b) ** 2 <= 1.0), a
    assert isinstance(r, Rectangle)
    corners = SkyCoord([c[0] for c in r.corners] * u.deg, [c[1] for c in r.corners] * u.deg)
    c_off = centre.spherical_offsets_to(corners)
    scale = _to_90(1.0, r.containment)
    poly = np.c_[c_off[0].deg, c_off[1].deg] * scale
    outer = float(np.max(np.hypot(poly[:, 0], poly[:, 1])))
    near = sep <= outer
    mask = np.zeros(sep.shape, dtype=bool)
    mask[near] = _in_polygon(east[near], north[near], poly)
    return mask, outer


MAX_REGION_RADIUS_DEG = 20.0
"""``max_region_radius`` of the bundled catalogs (annotators/data/catalogs/bundled.yaml)."""


def stand_in_catalog_annotation(alert: Alert, extra_outside: int = 3) -> Annotation | None:
    """What the catalog annotator reports, computed with astropy from the real catalogs.

    Every source inside the alert's 90 % region (circles and ellipses scaled
    from their containment as a 2-D Gaussian, read as 90 % when unstated;
    rectangles tested in the tangent plane) with ``source_in_region=True``,
    plus up to ``extra_outside`` nearest sources per catalog within twice the
    region's radius with ``source_in_region=False`` (the filters must ignore
    them).  An alert with only a best position gets an ``ok`` annotation with
    no match inside; one with no region (sky map only, or nothing) gets none.
    Regions larger than :data:`MAX_REGION_RADIUS_DEG` are not matched.
    """
    if alert.region is None:
        return None
    centre = SkyCoord(alert.region.ra * u.deg, alert.region.dec * u.deg)
    matches: list[CatalogMatch] = []
    counts: dict[str, int] = {}
    for cat in _catalogs():
        sep = np.asarray(centre.separation(cat.coords).deg)
        if isinstance(alert.region, Point):
            inside, outer = np.zeros(sep.shape, dtype=bool), 0.0
        else:
            inside, outer = _inside(alert, centre, cat, sep)
            if outer > MAX_REGION_RADIUS_DEG:  # as the bundled catalogs declare: too large a region to match
                counts[f"skipped_{cat.name}"] = 1
                continue
        outside = np.where(~inside & (sep <= 2.0 * outer))[0]
        chosen = [(int(i), True) for i in np.where(inside)[0]]
        chosen += [(int(i), False) for i in outside[np.argsort(sep[outside])][:extra_outside]]
        counts[f"n_{cat.name}"] = int(inside.sum())
        for i, in_region in sorted(chosen, key=lambda c: sep[c[0]]):
            dist = None if cat.distance is None or not math.isfinite(cat.distance[i]) else float(cat.distance[i])
            matches.append(
                CatalogMatch(
                    cat.name,
                    cat.ids[i],
                    float(cat.ra[i]),
                    float(cat.dec[i]),
                    float(sep[i]),
                    source_in_region=in_region,
                    distance=dist,
                    properties=cat.props[i],
                )
            )
    return Annotation("catalogs", "test-stand-in", "ok", matches=tuple(matches), properties=counts)


def _stand_in(alerts: Sequence[Alert]) -> list[Alert]:
    out = []
    for a in alerts:
        ann = stand_in_catalog_annotation(a)
        out.append(a if ann is None else a.with_annotations((ann,)))
    return out


def _project_annotator() -> Annotate:
    """The project's catalog annotator over the bundled catalogs (skips the test while it cannot be imported)."""
    crossmatch = pytest.importorskip("annotators.crossmatch")
    catalogs = importlib.import_module("annotators.catalogs")
    annotator = crossmatch.CatalogAnnotator([catalogs.load_catalog(s) for s in catalogs.bundled_specs()])

    def annotate(alerts: Sequence[Alert]) -> list[Alert]:
        results = annotator.annotate(list(alerts))
        return [a if ann is None else a.with_annotations((ann,)) for a, ann in zip(alerts, results, strict=True)]

    return annotate


@pytest.fixture(scope="module", params=["stand-in", "annotators.crossmatch"])
def annotate_with_catalogs(request: pytest.FixtureRequest) -> Annotate:
    """Annotate alerts with catalog matches: the astropy stand-in, or the project's annotator."""
    return _stand_in if request.param == "stand-in" else _project_annotator()


@pytest.fixture(scope="module")
def annotated(annotate_with_catalogs: Annotate) -> dict[str, Alert]:
    rels = sorted(parsed_notices())
    return dict(zip(rels, annotate_with_catalogs([notice(r) for r in rels]), strict=True))


def run_all(alert: Alert) -> tuple[list[str], dict[str, FilterResult | None]]:
    """Tags (sorted) and per-filter results of every built-in on ``alert``, as the broker runs them."""
    results = {f.name: run_filter(f(), alert) for f in BUILTIN_FILTERS}
    tags = sorted({t for r in results.values() if r is not None for t in r.tags})
    return tags, results


def _is_stand_in(alert: Alert) -> bool:
    ann = alert.annotation("catalogs")
    return ann is not None and ann.version == "test-stand-in"


def result_of(flt: Filter, alert: Alert) -> FilterResult:
    out = run_filter(flt, alert)
    assert out is not None, f"{flt.name} skipped the alert"
    return out


# --------------------------------------------------------------------------- the expectations


def test_expectations_name_parsed_notices_and_known_tags() -> None:
    parsed = parsed_notices()
    exp = expectations()
    assert len(parsed) > 100, "the corpus is smaller than expected: is tests/data/notices complete?"
    unknown = [rel for rel in (*exp["notices"], *exp["hard_negatives"]) if rel not in parsed]
    assert unknown == [], f"expectations for notices that do not exist or do not parse: {unknown}"
    assert not set(exp["notices"]) & set(exp["hard_negatives"])
    for rel, v in exp["notices"].items():
        assert v["tags"], f"{rel}: list only notices with tags"
        assert set(v["tags"]) <= ALL_TAGS, f"{rel}: unknown tags {set(v['tags']) - ALL_TAGS}"
    assert {t for v in exp["notices"].values() for t in v["tags"]} == ALL_TAGS, "every built-in tag is exercised"


def test_every_real_notice_gets_exactly_its_expected_tags(annotated: dict[str, Alert]) -> None:
    """Each parsed notice's built-in tags equal the expectation; every unlisted notice gets none."""
    got = {}
    for rel, alert in annotated.items():
        tags, _ = run_all(alert)
        if tags:
            got[rel] = tags
    want = expected_tags()
    wrong = {
        rel: (got.get(rel, []), want.get(rel, []))
        for rel in sorted(set(got) | set(want))
        if got.get(rel, []) != want.get(rel, [])
    }
    assert wrong == {}, "notice: (got, expected)\n" + "\n".join(f"{k}: {v}" for k, v in wrong.items())


def test_catalog_filters_are_skipped_without_the_annotation() -> None:
    """Without a catalog annotation (or with a missing one) the catalog filters do not run."""
    cascade = notice("voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml")
    maxi = notice("gcn-json/maxi/gsc.unknown.circle.example.json")
    assert run_filter(NeutrinoBlazar(), cascade) is None
    assert run_filter(XrayNearGalaxy(), maxi) is None
    missing = Annotation("catalogs", "1.0", status="missing", reason="timeout")
    assert run_filter(NeutrinoBlazar(), cascade.with_annotations((missing,))) is None


def test_properties_of_tagged_notices(annotated: dict[str, Alert]) -> None:
    """The properties name the catalog source and carry the values read from the notice, in their units."""
    cascade = result_of(NeutrinoBlazar(), annotated["voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml"])
    assert cascade.properties["blazar"] == "4FGL J0956.5-0958"
    assert cascade.properties["blazar_catalog"] in {"4fgl-dr4", "4lac-dr3"}
    assert cascade.properties["blazar_separation"] == pytest.approx(1.2521, abs=1e-3)
    stand_in = _is_stand_in(annotated["gcn-json/maxi/gsc.unknown.circle.example.json"])
    if stand_in:  # the project's annotator may report fewer matches per catalog
        assert cascade.properties["n_blazars"] == 40 + 38 + 34
    nu = result_of(HighSignalnessNeutrino(), annotated["voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml"])
    assert nu.properties == {"signalness": 0.9001, "gold_stream": False}
    maxi = result_of(XrayNearGalaxy(), annotated["gcn-json/maxi/gsc.unknown.circle.example.json"])
    assert maxi.properties["galaxy"] == "UGC12344"
    assert maxi.properties["galaxy_distance"] == pytest.approx(21.026, abs=1e-3)
    assert maxi.properties["galaxy_separation"] == pytest.approx(0.3088, abs=1e-3)
    rect = result_of(XrayNearGalaxy(), annotated["gcn-json/maxi/gsc.unknown.rectangle.example.json"])
    assert rect.properties["galaxy"] == "UGC12344"
    if stand_in:
        assert (maxi.properties["n_galaxies"], rect.properties["n_galaxies"]) == (7, 4)
    gw170817 = result_of(SignificantGW(), notice("voevent/lvc/gwcelery_G298048-1-Initial.xml"))
    assert gw170817.properties["far_per_year"] == pytest.approx(3.47773444765e-12 * 365.25 * 86400)
    assert "p_bns_nsbh" not in gw170817.properties
    nsbh = result_of(SignificantGW(), notice("igwn/kafka-json/finkmm_lvk_initial.json"))
    assert nsbh.properties["p_bns_nsbh"] == pytest.approx(0.8642645059209272)
    assert nsbh.properties["has_remnant"] == 0.0
    gbm = result_of(WellLocalizedGRB(), notice("gcn-json/gwcelery_test_alerts/kafka_alert_fermi.json"))
    assert gbm.properties["error_radius_90"] == pytest.approx(0.3 * math.sqrt(math.log(10) / -math.log(0.32)))


# --------------------------------------------------------------------------- boundaries: GW


def test_gw_far_exactly_one_per_year_is_not_significant() -> None:
    """S191216ap with its FAR set (dataclasses.replace) to exactly 1/yr: not tagged; one ulp below: tagged."""
    real = notice("voevent/lvc/S191216ap_initial.xml")
    at = dataclasses.replace(real, far=ONE_PER_YEAR_HZ)
    below = dataclasses.replace(real, far=math.nextafter(ONE_PER_YEAR_HZ, 0.0))
    assert pytest.approx(3.1688e-8, rel=1e-4) == ONE_PER_YEAR_HZ
    assert result_of(SignificantGW(), at).tags == ()
    assert result_of(SignificantGW(), below).tags == ("gw-significant",)


def test_gw_test_and_retraction_are_not_tagged() -> None:
    """GW170817's notice marked as a test, then as a retraction (dataclasses.replace): nothing."""
    real = notice("voevent/lvc/gwcelery_G298048-1-Initial.xml")
    assert result_of(SignificantGW(), real).tags == ("gw-significant", "kilonova-candidate")
    assert result_of(SignificantGW(), dataclasses.replace(real, is_test=True)).tags == ()
    assert result_of(SignificantGW(), dataclasses.replace(real, kind="retraction")).tags == ()


def test_gw_without_far_is_skipped() -> None:
    """A retraction carries no FAR: the filter (requires far) is skipped, like the real MS181101ab retraction."""
    assert run_filter(SignificantGW(), notice("igwn/kafka-json/MS181101ab-retraction.json")) is None


@pytest.mark.parametrize(
    ("has_ns", "has_remnant", "classification", "kilonova"),
    [
        (0.5, 0.5, None, True),  # both exactly at 0.5: kept
        (0.5, math.nextafter(0.5, 0.0), None, False),
        (math.nextafter(0.5, 0.0), 1.0, None, False),
        (1.0, 1.0, {"BNS": 0.25, "NSBH": 0.25, "BBH": 0.4, "Terrestrial": 0.1}, True),  # P(BNS)+P(NSBH) = 0.5
        (1.0, 1.0, {"BNS": 0.2, "NSBH": 0.2, "BBH": 0.5, "Terrestrial": 0.1}, False),
        (1.0, 1.0, {"NSBH": 0.6, "BBH": 0.4}, True),  # BNS absent counts as 0
    ],
)
def test_kilonova_thresholds(
    has_ns: float, has_remnant: float, classification: dict[str, float] | None, kilonova: bool
) -> None:
    """GW170817's notice with HasNS, HasRemnant and the classification replaced (dataclasses.replace)."""
    real = notice("voevent/lvc/gwcelery_G298048-1-Initial.xml")
    props = {**real.properties, "has_ns": has_ns, "has_remnant": has_remnant}
    alert = dataclasses.replace(real, properties=props, classification=classification or {})
    tags = result_of(SignificantGW(), alert).tags
    assert tags == (("gw-significant", "kilonova-candidate") if kilonova else ("gw-significant",))


def test_gw_filter_ignores_other_messengers() -> None:
    """GLOWBUG's gamma-ray alert has a BNS-like classification and a FAR, but is no GW alert."""
    glowbug = notice("gcn-json/glowbug/Alert.example.json")
    low_far = dataclasses.replace(glowbug, far=1e-12)
    assert result_of(SignificantGW(), low_far).tags == ()


# --------------------------------------------------------------------------- boundaries: GRB


def _with_circle(alert: Alert, radius: float, containment: float | None) -> Alert:
    assert isinstance(alert.region, Circle)
    return dataclasses.replace(alert, region=dataclasses.replace(alert.region, radius=radius, containment=containment))


def test_grb_radius_exactly_one_degree_is_not_well_localized() -> None:
    """Swift BAT 392 with its 90 % radius replaced by 1 deg (not tagged) and just under (tagged)."""
    swift = notice("voevent/swift/finkmm_swift_voevent_number_392.xml")
    assert result_of(WellLocalizedGRB(), _with_circle(swift, 1.0, 0.9)).tags == ()
    assert result_of(WellLocalizedGRB(), _with_circle(swift, math.nextafter(1.0, 0.0), 0.9)).tags == (
        "grb-well-localized",
    )


def test_grb_68_percent_radius_is_scaled_to_90() -> None:
    """Fermi GBM final position (1.0 deg at 68 %, real) and the same notice with 0.70 / 0.71 deg at 68 %."""
    gbm = notice("gcn-json/fermi/gbm/trigger.final.example.json")
    assert error_radius_90(gbm) == pytest.approx(1.4216, abs=1e-4)
    assert result_of(WellLocalizedGRB(), gbm).tags == ()
    assert result_of(WellLocalizedGRB(), _with_circle(gbm, 0.70, 0.68)).tags == ("grb-well-localized",)  # 0.995
    assert result_of(WellLocalizedGRB(), _with_circle(gbm, 0.71, 0.68)).tags == ()  # 1.009


def test_grb_unstated_containment_is_taken_as_68_percent() -> None:
    """The SVOM template (0.1 deg, containment unstated) with 0.70 deg (tagged) and 0.71 deg (not)."""
    svom = notice("voevent/svom/gwcelery_svom_grb_template.xml")
    assert isinstance(svom.region, Circle)
    assert svom.region.containment is None
    assert result_of(WellLocalizedGRB(), _with_circle(svom, 0.70, None)).tags == ("grb-well-localized",)
    assert result_of(WellLocalizedGRB(), _with_circle(svom, 0.71, None)).tags == ()


def test_grb_ellipse_counts_by_its_semi_major_axis() -> None:
    """Swift BAT 392 given an elliptical 90 % region (dataclasses.replace): 1.2 x 0.3 deg (no), 0.9 x 0.3 deg (yes)."""
    swift = notice("voevent/swift/finkmm_swift_voevent_number_392.xml")
    assert swift.region is not None
    ra, dec = swift.region.ra, swift.region.dec
    long = dataclasses.replace(swift, region=Ellipse(ra, dec, 1.2, 0.3, 30.0, containment=0.9))
    short = dataclasses.replace(swift, region=Ellipse(ra, dec, 0.9, 0.3, 30.0, containment=0.9))
    assert result_of(WellLocalizedGRB(), long).tags == ()
    assert result_of(WellLocalizedGRB(), short).tags == ("grb-well-localized",)


def test_grb_point_test_retraction_and_not_a_grb_are_not_tagged() -> None:
    """Swift BAT 392 as a point, a test, a retraction, and flagged Def_NOT_a_GRB (dataclasses.replace)."""
    swift = notice("voevent/swift/finkmm_swift_voevent_number_392.xml")
    assert swift.region is not None
    assert result_of(WellLocalizedGRB(), swift).tags == ("grb-well-localized",)
    variants = [
        dataclasses.replace(swift, region=Point(swift.region.ra, swift.region.dec)),
        dataclasses.replace(swift, is_test=True),
        dataclasses.replace(swift, kind="retraction"),
        dataclasses.replace(swift, properties={**swift.properties, "def_not_a_grb": True}),
    ]
    for v in variants:
        assert result_of(WellLocalizedGRB(), v).tags == ()


def test_grb_filter_ignores_optical_and_xray_alerts() -> None:
    """Swift UVOT (0.0001 deg, optical) and BeppoSAX WFC (0.083 deg, X-ray): small regions, not gamma-ray alerts."""
    for rel in (
        "voevent/swift/finkmm_swift_voevent_number_8582.xml",
        "gcn-json/_unmerged_pr_examples/pr161/classic/bepposax/alert.example.json",
    ):
        assert result_of(WellLocalizedGRB(), notice(rel)).tags == ()


# --------------------------------------------------------------------------- boundaries: neutrinos


@pytest.mark.parametrize(("value", "tagged"), [(0.5, True), (math.nextafter(0.5, 0.0), False)])
def test_signalness_exactly_one_half_is_high(value: float, tagged: bool) -> None:
    """The Bronze alert 3028 (signalness 0.3865) with its signalness replaced (dataclasses.replace)."""
    bronze = notice("voevent/icecube_amon/finkmm_icecube_voevent_number_3028.xml")
    alert = dataclasses.replace(bronze, properties={**bronze.properties, "signalness": value})
    assert result_of(HighSignalnessNeutrino(), alert).tags == (("high-signalness-neutrino",) if tagged else ())


def test_gold_stream_without_high_signalness_is_tagged() -> None:
    """The unified-schema IceCube Bronze alert (p_astro 0.34) relabelled 'Gold Track Alert' (dataclasses.replace)."""
    bronze = notice("gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")
    assert result_of(HighSignalnessNeutrino(), bronze).tags == ()
    gold = dataclasses.replace(bronze, properties={**bronze.properties, "pipeline": "Gold Track Alert"})
    out = result_of(HighSignalnessNeutrino(), gold)
    assert out.tags == ("high-signalness-neutrino",)
    assert out.properties == {"signalness": 0.34064, "gold_stream": True}


def test_neutrino_test_and_retraction_are_not_tagged(annotate_with_catalogs: Annotate) -> None:
    """The real cascade 825 (both neutrino tags) marked as a test, then a retraction (dataclasses.replace)."""
    cascade = notice("voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml")
    for variant in (dataclasses.replace(cascade, is_test=True), dataclasses.replace(cascade, kind="retraction")):
        (annotated,) = annotate_with_catalogs([variant])
        assert run_all(annotated)[0] == []


def test_supernova_neutrinos_are_out_of_scope(annotate_with_catalogs: Annotate) -> None:
    """Super-K's real SN alert has a 3HSP source inside its 90 % region, and even with signalness 0.9 gets no tag."""
    sk = notice("gcn-json/superk/sn_alert.real.example.json")
    sk = dataclasses.replace(sk, properties={**sk.properties, "signalness": 0.9})
    (annotated,) = annotate_with_catalogs([sk])
    ann = annotated.annotation("catalogs")
    assert ann is not None
    assert any(m.catalog == "3hsp" and m.source_in_region for m in ann.matches)
    assert run_all(annotated)[0] == []


@pytest.mark.parametrize(
    ("radius", "blazar"),
    [
        (0.5, None),  # the real radius: nothing inside
        (0.8, None),  # Roma-BZCAT 5BZQJ2306+0837 (0.78 deg) inside: not one of the filter's catalogs
        (1.05, None),
        (1.06, "4FGL J2306.6+0940"),  # a 4FGL-DR4 bcu at 1.054 deg, not in 4LAC-DR3
    ],
)
def test_neutrino_blazar_region_boundary(annotate_with_catalogs: Annotate, radius: float, blazar: str | None) -> None:
    """IceCube-230416A (unified schema, 0.5 deg at 90 %) with its radius replaced, then annotated from the catalogs."""
    nu = notice("gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")
    (annotated,) = annotate_with_catalogs([_with_circle(nu, radius, 0.9)])
    out = result_of(NeutrinoBlazar(), annotated)
    if blazar is None:
        assert out.tags == ()
    else:
        assert out.tags == ("neutrino-blazar",)
        assert out.properties["blazar"] == blazar
        assert out.properties["blazar_catalog"] == "4fgl-dr4"


def test_neutrino_blazar_counts_only_blazar_classes(annotate_with_catalogs: Annotate) -> None:
    """Bronze 3028 (near Vela) with a 4 deg radius: 31 4FGL sources inside (pulsar, SNR, unassociated), no blazar."""
    bronze = notice("voevent/icecube_amon/finkmm_icecube_voevent_number_3028.xml")
    (annotated,) = annotate_with_catalogs([_with_circle(bronze, 4.0, 0.9)])
    ann = annotated.annotation("catalogs")
    assert ann is not None
    fgl = [m for m in ann.matches if m.catalog == "4fgl-dr4" and m.source_in_region]
    assert len(fgl) > 10
    assert any(m.source_id == "4FGL J0835.3-4510" for m in fgl)  # the Vela pulsar
    assert result_of(NeutrinoBlazar(), annotated).tags == ()


# --------------------------------------------------------------------------- boundaries: X-ray


def _with_galaxy_distance(alert: Alert, distance: float | None) -> Alert:
    """The alert with the distance of every 50MGC match replaced (a boundary test of the distance cut only)."""
    ann = alert.annotation("catalogs")
    assert ann is not None
    matches = tuple(dataclasses.replace(m, distance=distance) if m.catalog == "50mgc" else m for m in ann.matches)
    others = tuple(a for a in alert.annotations if a.annotator != "catalogs")
    return dataclasses.replace(alert, annotations=(*others, dataclasses.replace(ann, matches=matches)))


@pytest.mark.parametrize(("distance", "tagged"), [(50.0, True), (math.nextafter(50.0, 100.0), False), (None, False)])
def test_galaxy_distance_boundary(annotated: dict[str, Alert], distance: float | None, tagged: bool) -> None:
    """The MAXI circle's real 50MGC matches with their distances replaced: 50 Mpc counts, beyond or unknown does not."""
    maxi = _with_galaxy_distance(annotated["gcn-json/maxi/gsc.unknown.circle.example.json"], distance)
    assert result_of(XrayNearGalaxy(), maxi).tags == (("xray-near-galaxy",) if tagged else ())


def test_galaxies_outside_the_region_do_not_count() -> None:
    """The MAXI ellipse of GRB 230220A: UGC12344 (21 Mpc) is reported outside the ellipse, and not counted.

    Uses the stand-in annotator, which also reports the nearest sources
    outside the region (``source_in_region=False``), as an annotator may.
    """
    (ellipse,) = _stand_in([notice("gcn-json/maxi/gsc.unknown.ellipse.example.json")])
    ann = ellipse.annotation("catalogs")
    assert ann is not None
    gal = [m for m in ann.matches if m.catalog == "50mgc"]
    assert "UGC12344" in [m.source_id for m in gal]
    assert not any(m.source_in_region for m in gal)
    assert result_of(XrayNearGalaxy(), ellipse).tags == ()


def test_xray_test_retraction_and_other_missions_are_not_tagged(annotate_with_catalogs: Annotate) -> None:
    """The MAXI circle as a test, a retraction, and as a BeppoSAX alert (dataclasses.replace)."""
    maxi = notice("gcn-json/maxi/gsc.unknown.circle.example.json")
    variants = [
        dataclasses.replace(maxi, is_test=True),
        dataclasses.replace(maxi, kind="retraction"),
        dataclasses.replace(maxi, mission="BeppoSAX"),
    ]
    for annotated in annotate_with_catalogs(variants):
        assert result_of(XrayNearGalaxy(), annotated).tags == ()


# --------------------------------------------------------------------------- declarations and doctests


@pytest.mark.parametrize("flt", BUILTIN_FILTERS, ids=lambda f: f.name)
def test_declarations_are_valid(flt: type[Filter]) -> None:
    assert NAME_RE.match(flt.name)
    assert flt.version
    assert flt.description
    assert flt.__doc__
    for name in (*flt.tags, *flt.properties):
        assert NAME_RE.match(name), name
    for req in flt.requires:
        assert check_requirement(req) is None, req
    assert all(flt.tags.values())
    assert all(flt.properties.values())


def test_registry_discovers_and_accepts_every_builtin() -> None:
    """The broker's registry finds exactly BUILTIN_FILTERS in the filters package, and validates each."""
    registry = pytest.importorskip("broker.filter_registry")
    found = []
    for ref in registry.discover(builtin_package="filters", entry_point_group=None):
        for narrowed, cls in registry.resolve(ref):
            registry.validate(cls, narrowed)
            found.append(cls)
    assert sorted(c.name for c in found) == sorted(c.name for c in BUILTIN_FILTERS)


@pytest.mark.parametrize("module", FILTER_MODULES)
def test_doctests(module: str) -> None:
    """The examples in the filters' docstrings run on the bundled real notices."""
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module} has no doctest"
    assert result.failed == 0, f"{result.failed} doctest(s) of {module} failed (see the output above)"


def test_stand_in_uses_the_bundled_region_limit() -> None:
    from annotators.catalogs import bundled_specs

    assert {s.max_region_radius for s in bundled_specs()} == {MAX_REGION_RADIUS_DEG}

# SPDX-License-Identifier: Apache-2.0
"""Speed of the coincidence spatial tests (``broker.coincidence.spatial``) on real localizations.

Run with ``PYTHONPATH=. python bench/bench_coincidence_spatial.py``.  Prints
the median and 90th percentile of:

* ``footprint(alert)`` for real GW sky maps (user-guide BAYESTAR map, the
  MS220722v MDC map, the production S230518h map) and the Fermi GBM map;
* ``Footprint.from_bytes`` of the same (what the coincidence stage does with
  a window entry it has not cached);
* ``compare_many`` of one point-like alert (a real Swift circle, a real
  IceCube circle) against 500 point and circle footprints scattered over the
  sky (goal: well under 1 ms);
* ``compare_many`` of one sky map (the real GBM map, the user-guide GW map,
  the broad MS220722v map) against 100 GW sky-map footprints: the real GW maps
  rotated to random positions, built once (goal: well under 20 ms).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import healpy as hp
import numpy as np

from broker.coincidence.spatial import Footprint, compare_many, footprint, region_footprint, skymap_footprint
from broker.formats import parse
from broker.formats.skymap import decode_fits_skymap
from broker.model import Alert, Circle, Point, SkyMap

ROOT = Path(__file__).resolve().parents[1]
NOTICES = ROOT / "tests" / "data" / "notices"
SKYMAPS = NOTICES / "igwn" / "skymaps"


def timeit(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Median and 90th percentile of the wall time of ``repeat`` calls and their median CPU time, ms.

    The CPU time (``time.process_time``) is the figure to trust on a machine
    shared with other work.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    wall.sort()
    return statistics.median(wall), wall[int(0.9 * (len(wall) - 1))], statistics.median(cpu)


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotated(fp: Footprint, rot: np.ndarray) -> SkyMap:
    """The footprint's map rotated by ``rot``: each pixel split in 16, moved, re-binned at its order."""
    order = fp.order if fp.order is not None else 0
    sub = order + 2
    children = (fp.ipix[:, None] * 16 + np.arange(16)).ravel()
    prob = np.repeat(fp.prob / 16.0, 16)
    vec = np.column_stack(hp.pix2vec(1 << sub, children, nest=True)) @ rot.T
    target = hp.vec2pix(1 << order, vec[:, 0], vec[:, 1], vec[:, 2], nest=True)
    pix, inverse = np.unique(target, return_inverse=True)
    p = np.bincount(inverse, weights=prob)
    area = 4 * np.pi / (12 << (2 * order))
    return SkyMap(uniq=(4 << (2 * order)) + pix.astype(np.int64), probdensity=p / area)


def load(path: Path) -> Alert:
    return parse(path.read_bytes())


def fits_map(name: str) -> SkyMap:
    return decode_fits_skymap((SKYMAPS / name).read_bytes(), name)


def fmt(t: tuple[float, float, float], unit: str = "ms") -> str:
    k = 1e3 if unit == "us" else 1.0
    return f"{t[0] * k:8.3f} {unit} (p90 {t[1] * k:8.3f}, cpu {t[2] * k:8.3f})"


def main() -> None:
    rng = np.random.default_rng(20240601)
    gw_update = load(NOTICES / "igwn" / "kafka-json" / "MS181101ab-update.json")
    s230518h = load(NOTICES / "igwn" / "kafka-json" / "finkmm_lvk_initial.json")
    if gw_update.skymap is None or s230518h.skymap is None:
        raise SystemExit("the IGWN sample notices lost their sky maps")
    maps = {
        "user-guide BAYESTAR": gw_update.skymap,
        "S230518h (production)": s230518h.skymap,
        "MS220722v (MDC)": fits_map("gwcelery_MS220722v_bayestar.multiorder.fits"),
        "combined GW x GBM": fits_map("userguide_combined-ext.multiorder.fits"),
        "small-area G1028259": fits_map("gwcelery_rrt_small_area.fits"),
        "Swift BAT-GUANO": fits_map("gwcelery_swift_skymap.multiorder.fits"),
        "Fermi GBM flat nside 8": fits_map("gwcelery_fermi_skymap.fits.gz"),
    }
    print("footprint() and from_bytes() of real sky maps (median wall time, p90, median CPU time)")
    fps: dict[str, Footprint] = {}
    for name, sm in maps.items():
        fp = skymap_footprint(sm)
        fps[name] = fp
        raw = fp.to_bytes()
        print(f"  {name:24s} order {fp.order} {fp.ipix.size:6d} px {len(raw):7d} B")
        print(f"    footprint  {fmt(timeit(lambda sm=sm: skymap_footprint(sm), 10))}")
        print(f"    from_bytes {fmt(timeit(lambda raw=raw: Footprint.from_bytes(raw), 200), 'us')}")
    print(f"  footprint(alert) of the user-guide GW alert: {fmt(timeit(lambda: footprint(gw_update), 20))}")

    # ------------------------------------------------------------------ point-like vs 500 point-like
    ra = rng.uniform(0, 360, 500)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    radii = rng.choice([0.0, 0.05, 0.5, 1.0, 5.0, 10.0], 500)
    window = [region_footprint(Point(r, d) if rad == 0 else Circle(r, d, rad, 0.9))
              for r, d, rad in zip(ra, dec, radii, strict=True)]
    swift = footprint(load(NOTICES / "voevent" / "swift" / "SWIFT_bat_position_v2.0_example.xml"))
    icecube = footprint(load(NOTICES / "voevent" / "icecube_amon" / "sample_astrotrack_alert.xml"))
    point = footprint(load(NOTICES / "gcn-json" / "icecube" / "lvk_nu_track_search.example.json"))
    print("compare_many: one point-like alert against 500 point/circle footprints (goal: well under 1 ms)")
    for name, q in (("Swift BAT circle 0.05 deg", swift), ("IceCube track circle 1.1 deg", icecube),
                    ("IceCube point", point)):
        print(f"  {name:28s} {fmt(timeit(lambda q=q: compare_many(q, window), 300))}")

    # ------------------------------------------------------------------ sky map vs 100 rotated GW maps
    gw_names = ["user-guide BAYESTAR", "S230518h (production)", "MS220722v (MDC)", "combined GW x GBM",
                "small-area G1028259"]
    t0 = time.perf_counter()
    gw_window = [skymap_footprint(rotated(fps[gw_names[i % len(gw_names)]], rotation(rng))) for i in range(100)]
    raws = [f.to_bytes() for f in gw_window]
    print(f"sky-map window: 100 rotated GW footprints built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(map(len, raws)) / 1e6:.1f} MB as bytes")
    print(f"  from_bytes of all 100: {fmt(timeit(lambda: [Footprint.from_bytes(r) for r in raws], 20))}")
    print("compare_many: one sky map against the 100 GW sky-map footprints (goal: well under 20 ms)")
    for name in ("Fermi GBM flat nside 8", "Swift BAT-GUANO", "user-guide BAYESTAR", "combined GW x GBM",
                 "S230518h (production)", "MS220722v (MDC)"):
        q = fps[name]
        res = compare_many(q, gw_window)
        n_co = sum(r.coincident for r in res)
        n_int = sum(1 for r in res if r.overlap)
        print(f"  {name:24s} {fmt(timeit(lambda q=q: compare_many(q, gw_window), 30))}"
              f"  coincident {n_co:3d}, non-zero overlaps {n_int:3d}")
    print("compare_many: one sky map against the 500 point/circle footprints")
    for name in ("Fermi GBM flat nside 8", "user-guide BAYESTAR", "MS220722v (MDC)"):
        q = fps[name]
        print(f"  {name:24s} {fmt(timeit(lambda q=q: compare_many(q, window), 10))}")


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""Benchmark: cross-matching a galaxy catalog with real sky maps, ours vs ligo.skymap.

For every real sky map of ``tests/data/notices/igwn/skymaps`` and every galaxy of
the 50MGC catalog, times

* ``annotators.skymap.crossmatch`` plus the 50 %/90 % contour areas cold (index
  built: one sort per map; the work ligo.skymap does) and the crossmatch warm
  (index memoised, as when several catalogs are matched to one alert), and,
  apart, the two credible-region MOCs (which ligo.skymap does not make);
* ``ligo.skymap.postprocess.crossmatch.crossmatch`` on the map reduced to its
  ``UNIQ``/``PROBDENSITY`` columns with coordinates without distance (its
  fastest 2D path), and, for information, on the full map (which runs its 3D
  grid whenever the map has distance layers) without and with galaxy distances;

checks that searched probability, searched area (deg^2), probability density
(sr^-1) and the 50 %/90 % contour areas agree to 1e-6 relative, and prints
per-map timings (best of ``--repeat``) and speedups.

Usage: ``python bench/bench_skymap.py [--repeat 5] [--catalog PATH] [--no-3d]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from annotators import skymap as sm
from broker.formats.skymap import decode_fits_skymap

ROOT = Path(__file__).resolve().parents[1]
SKYMAPS = ROOT / "tests" / "data" / "notices" / "igwn" / "skymaps"
CATALOG = Path("/work/shared/data/catalogs/galaxies/50MGC_catalog_short.fits")
RTOL = 1e-6


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Smallest wall time (s) of ``n`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def load_catalog(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    from astropy.table import Table

    t = Table.read(path)
    dist = np.ma.filled(np.ma.asarray(t["bestdist"], dtype=np.float64), np.nan)
    return np.asarray(t["ra"], dtype=np.float64), np.asarray(t["dec"], dtype=np.float64), np.asarray(dist)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="50MGC FITS catalog")
    parser.add_argument("--no-3d", action="store_true", help="skip ligo.skymap's slow 3D runs (information only)")
    args = parser.parse_args()

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from ligo.skymap.io.fits import read_sky_map
    from ligo.skymap.postprocess.crossmatch import crossmatch as ligo_crossmatch

    ra, dec, dist = load_catalog(args.catalog)
    coords = SkyCoord(ra * u.deg, dec * u.deg)  # built once, outside ligo's timings
    known = np.isfinite(dist) & (dist > 0)
    coords_3d = SkyCoord(ra[known] * u.deg, dec[known] * u.deg, dist[known] * u.Mpc)
    print(f"{ra.size} galaxies ({np.count_nonzero(known)} with a distance) from {args.catalog.name}")
    print(f"{'sky map':42s} {'npix':>7s} {'ours cold':>10s} {'ours warm':>10s} {'ligo 2D':>9s} "
          f"{'x cold':>7s} {'x warm':>7s} {'MOCs':>8s} {'ligo full':>10s} {'ligo 3D':>9s}")
    speedups: list[float] = []
    for path in sorted(p for p in SKYMAPS.iterdir() if p.name.endswith((".fits", ".fits.gz"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = read_sky_map(str(path), moc=True)
        table_2d = table[["UNIQ", "PROBDENSITY"]]
        skymap = decode_fits_skymap(path.read_bytes(), path.name)

        def cold(skymap: Any = skymap) -> Any:
            # the work ligo.skymap does: sort, cumulative sums, lookups, contour areas
            sm.clear_skymap_index_cache()
            return sm.crossmatch(skymap, ra, dec), sm.skymap_index(skymap).contour_area((0.5, 0.9))

        def mocs(skymap: Any = skymap) -> Any:
            return sm.credible_regions(skymap, (0.5, 0.9))

        def warm(skymap: Any = skymap) -> Any:
            return sm.crossmatch(skymap, ra, dec)

        def ligo_2d(table_2d: Any = table_2d) -> Any:
            return ligo_crossmatch(table_2d, coords, contours=(0.5, 0.9))

        t_cold, (ours, areas) = best_of(args.repeat, cold)
        t_warm, _ = best_of(args.repeat, warm)
        t_moc, regions = best_of(args.repeat, mocs)
        np.testing.assert_array_equal([r.area for r in regions], areas)
        t_ligo, theirs = best_of(args.repeat, ligo_2d)
        for field in ("searched_prob", "searched_area", "probdensity"):
            np.testing.assert_allclose(getattr(ours, field), getattr(theirs, field), rtol=RTOL, atol=0,
                                       err_msg=f"{path.name}: {field}")
        np.testing.assert_allclose([r.area for r in regions], theirs.contour_areas, rtol=RTOL, atol=0,
                                   err_msg=f"{path.name}: contour areas")
        t_full = t_3d = float("nan")
        if not args.no_3d:
            t_full, full = best_of(1, partial(ligo_crossmatch, table, coords, contours=(0.5, 0.9)))
            np.testing.assert_allclose(ours.searched_prob, full.searched_prob, rtol=RTOL, atol=0)
            t_3d, _ = best_of(1, partial(ligo_crossmatch, table, coords_3d, contours=(0.5, 0.9)))
        speedups.append(t_ligo / t_cold)
        print(f"{path.name:42s} {skymap.uniq.size:7d} {t_cold * 1e3:8.2f}ms {t_warm * 1e3:8.2f}ms "
              f"{t_ligo * 1e3:7.1f}ms {t_ligo / t_cold:6.1f}x {t_ligo / t_warm:6.1f}x {t_moc * 1e3:6.2f}ms "
              f"{t_full * 1e3:8.1f}ms {t_3d * 1e3:7.1f}ms")
    print(f"results identical to ligo.skymap to {RTOL:g} relative; "
          f"cold speedup vs ligo 2D: min {min(speedups):.1f}x, geometric mean "
          f"{float(np.exp(np.mean(np.log(speedups)))):.1f}x")
    if min(speedups) < 2:
        print("WARNING: below the 2x target on at least one map")


if __name__ == "__main__":
    main()

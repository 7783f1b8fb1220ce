# SPDX-License-Identifier: Apache-2.0
"""Benchmark: vectorised HEALPix cone search vs astropy ``search_around_sky``.

10,000 positions (real notice positions and bundled-catalog sources, jittered
with a fixed seed) with radii drawn from the 90 % error regions of the real
notices in ``tests/data/notices`` are matched against every bundled catalog:

* ours: one :func:`annotators.crossmatch.cone_pairs` call per catalog with the
  per-position radii;
* astropy: ``search_around_sky`` once per distinct radius (astropy is fastest
  with a scalar ``seplimit``; an array makes it query point by point), with the
  catalog's KD-tree built once and cached (``storekdtree``).

The two pair sets must be identical.  Prints timings, the speedup, and the
peak RSS with all catalogs loaded.

Usage: ``python bench/bench_catalogs.py [--n 10000] [--seed 7] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky

from annotators.catalogs import DENSE_INDEX_MAX_ORDER, Catalog, bundled_specs, load_catalog
from annotators.crossmatch import _regions, cone_pairs
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.replay import guess_topic, notice_paths

NOTICES = Path(__file__).resolve().parents[1] / "tests" / "data" / "notices"


def notice_regions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (deg) and 90 % region extents (deg) of the real notices that have a region."""
    regions = []
    for f in notice_paths([NOTICES]):
        try:
            alert = parse(f.read_bytes(), guess_topic(f))
        except RejectedNotice:
            continue
        if alert.region is not None:
            regions.append(alert.region)
    geo = _regions(regions)
    return geo.ra, geo.dec, geo.extent


def positions(
    catalogs: list[Catalog], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` jittered positions (deg) and radii (deg), plus the distinct notice radii."""
    ra0, dec0, extent = notice_regions()
    half = n // 2
    j = rng.integers(0, ra0.size, half)
    ra = [ra0[j] + rng.normal(0, 3.0, half)]
    dec = [dec0[j] + rng.normal(0, 3.0, half)]
    src_ra = np.concatenate([c.ra for c in catalogs])
    src_dec = np.concatenate([c.dec for c in catalogs])
    k = rng.integers(0, src_ra.size, n - half)
    ra.append(src_ra[k] + rng.normal(0, 0.05, n - half))
    dec.append(src_dec[k] + rng.normal(0, 0.05, n - half))
    ra_all = np.mod(np.concatenate(ra), 360.0)
    dec_all = np.clip(np.concatenate(dec), -90.0, 90.0)
    radius = extent[rng.integers(0, extent.size, n)]
    return ra_all, dec_all, radius, np.unique(extent)


def ours(catalogs: list[Catalog], ra: np.ndarray, dec: np.ndarray, radius: np.ndarray) -> list[set[tuple[int, int]]]:
    out = []
    for cat in catalogs:
        a, s, _ = cone_pairs(cat, ra, dec, radius)
        out.append(set(zip(a.tolist(), s.tolist(), strict=True)))
    return out


def theirs(catalogs: list[Catalog], ra: np.ndarray, dec: np.ndarray, radius: np.ndarray) -> list[set[tuple[int, int]]]:
    out = []
    alerts = SkyCoord(ra * u.deg, dec * u.deg)
    groups = [(r, np.flatnonzero(radius == r)) for r in np.unique(radius)]
    for cat in catalogs:
        sources = SkyCoord(cat.ra * u.deg, cat.dec * u.deg)
        pairs: set[tuple[int, int]] = set()
        for r, idx in groups:
            i1, i2, _, _ = search_around_sky(alerts[idx], sources, r * u.deg, storekdtree="bench_kdtree")
            pairs.update(zip(idx[i1].tolist(), i2.tolist(), strict=True))
        out.append(pairs)
    return out


def timed_ours(catalogs: list[Catalog], ra: np.ndarray, dec: np.ndarray, radius: np.ndarray) -> float:
    """Seconds for the matching alone (no set building)."""
    t0 = time.perf_counter()
    for cat in catalogs:
        cone_pairs(cat, ra, dec, radius)
    return time.perf_counter() - t0


def timed_theirs(catalogs: list[Catalog], ra: np.ndarray, dec: np.ndarray, radius: np.ndarray) -> float:
    t0 = time.perf_counter()
    alerts = SkyCoord(ra * u.deg, dec * u.deg)
    groups = [(r, np.flatnonzero(radius == r)) for r in np.unique(radius)]
    for cat in catalogs:
        sources = SkyCoord(cat.ra * u.deg, cat.dec * u.deg)
        for r, idx in groups:
            search_around_sky(alerts[idx], sources, r * u.deg, storekdtree="bench_kdtree")
    return time.perf_counter() - t0


def nbytes(cat: Catalog) -> int:
    """Bytes held by a catalog's arrays (index and lookup tables included)."""
    arrays = [cat.ra, cat.dec, cat.source_id, cat.sorted_pixels, cat.sorted_index, cat.sorted_xyz]
    arrays += [a for a in (cat.distance, cat.err_semi_major, cat.err_semi_minor, cat.err_pa) if a is not None]
    arrays += list(cat.properties.values())
    total = sum(a.nbytes for a in arrays)
    total += sum(np.ma.getmaskarray(a).nbytes for a in cat.properties.values())
    return total + sum(cat.pixel_starts(o).nbytes for o in range(DENSE_INDEX_MAX_ORDER + 1))


def rss_mb() -> float:
    """Peak resident set size of this process (MB; ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"peak RSS after imports: {rss_mb():.0f} MB")
    t0 = time.perf_counter()
    catalogs = [load_catalog(s) for s in bundled_specs()]
    load_s = time.perf_counter() - t0
    print(
        f"loaded {len(catalogs)} catalogs, {sum(len(c) for c in catalogs)} sources in {load_s:.2f} s; "
        f"peak RSS {rss_mb():.0f} MB"
    )

    rng = np.random.default_rng(args.seed)
    ra, dec, radius, distinct = positions(catalogs, args.n, rng)
    print(
        f"{args.n} positions; radii from {distinct.size} distinct notice regions: "
        f"median {np.median(radius):.3g} deg, 90th percentile {np.percentile(radius, 90):.3g} deg, "
        f"max {radius.max():.3g} deg"
    )

    t_ours = min(timed_ours(catalogs, ra, dec, radius) for _ in range(args.repeat))
    mb = sum(nbytes(c) for c in catalogs) / 2**20
    print(f"catalog arrays incl. index and lookup tables: {mb:.1f} MB; peak RSS after matching {rss_mb():.0f} MB")
    t_theirs = min(timed_theirs(catalogs, ra, dec, radius) for _ in range(args.repeat))

    got, want = ours(catalogs, ra, dec, radius), theirs(catalogs, ra, dec, radius)
    n_pairs = 0
    for cat, g, w in zip(catalogs, got, want, strict=True):
        if g != w:
            raise SystemExit(f"{cat.name}: {len(g - w)} pairs only ours, {len(w - g)} only astropy's")
        print(f"  {cat.name:12s} {len(cat):6d} sources  {len(g):9d} pairs  identical to astropy")
        n_pairs += len(g)
    print(f"cone_pairs:        {t_ours * 1e3:8.1f} ms  ({n_pairs / t_ours / 1e6:.1f} M pairs/s)")
    print(f"search_around_sky: {t_theirs * 1e3:8.1f} ms  ({n_pairs / t_theirs / 1e6:.1f} M pairs/s)")
    print(f"speedup:           {t_theirs / t_ours:8.1f} x")


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""Benchmark of the annotators in one run: catalog matching vs astropy, sky-map crossmatch vs ligo.skymap.

Runs ``bench_catalogs`` (10,000 jittered real positions against every bundled
catalog, ours vs ``search_around_sky``, identical pairs, memory) and then
``bench_skymap`` (the 50 Mpc galaxy catalog against every real sky map, ours
vs ``ligo.skymap.postprocess.crossmatch``, identical to 1e-6).

Usage: ``python bench/bench_annotators.py`` (from the repository root).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for script in ("bench_catalogs.py", "bench_skymap.py"):
        print(f"=== {script}")
        sys.argv = [script]
        runpy.run_path(str(HERE / script), run_name="__main__")

# SPDX-License-Identifier: Apache-2.0
"""Built-in X-ray filter: X-ray transients in the direction of a nearby galaxy."""

from __future__ import annotations

import math

from broker.filtering import Filter, FilterResult
from broker.model import Alert
from filters.blocks import catalog_matches, is_real, nearest

__all__ = ["XrayNearGalaxy"]


class XrayNearGalaxy(Filter):
    """X-ray transients with a galaxy closer than 50 Mpc inside their 90 % region.

    Criterion: a real (not test, not retracted) X-ray alert from the
    Einstein Probe (WXT/FXT), MAXI or Swift (XRT), whose catalog annotation
    lists at least one galaxy of the 50 Mpc Galaxy Catalog (``50mgc``, Ohlson
    et al. 2024, AJ, arXiv:2309.05701) inside the alert's 90 % region
    (``source_in_region``) with a catalog distance (``bestdist``) of at most
    50 Mpc; galaxies of unknown distance do not count.  At these distances a
    fast X-ray transient may be a nearby supernova shock breakout, a
    magnetar giant flare or a compact-binary merger in the LVK range.

    The region is the alert's own (the annotator scales circles and ellipses
    to 90 % as a 2-D Gaussian); alerts with only a best position match
    nothing inside a region.

    Examples
    --------
    The filter needs the catalog annotation and is skipped without it:

    >>> from broker.filtering import run_filter
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> maxi = parse((sample_dir() / "gcn-json/maxi/gsc.unknown.circle.example.json").read_bytes())
    >>> maxi.messenger, run_filter(XrayNearGalaxy(), maxi) is None
    ('xray', True)
    """

    name = "xray-near-galaxy"
    version = "1.0.0"
    description = "Real Einstein Probe, MAXI, Swift X-ray alerts with a 50MGC galaxy (<= 50 Mpc) in their 90 % region."
    requires = ("annotations.catalogs",)
    tags = {"xray-near-galaxy": "X-ray transient whose 90 % region holds a galaxy closer than 50 Mpc (50MGC)"}
    properties = {
        "galaxy": "50MGC name of the qualifying galaxy nearest to the alert's best position",
        "galaxy_distance": "catalog distance of that galaxy (Mpc)",
        "galaxy_separation": "angular distance from the alert's best position to that galaxy (deg)",
        "n_galaxies": "50MGC galaxies within 50 Mpc inside the 90 % region, as listed by the annotator (which may cap "
        "the matches it lists per catalog)",
    }

    missions = frozenset({"Einstein Probe", "MAXI", "Swift"})
    """Missions whose X-ray alerts are considered."""
    galaxy_catalog = "50mgc"
    """Catalog of nearby galaxies (as registered)."""
    max_distance = 50.0
    """Largest galaxy distance (Mpc), inclusive."""

    def run(self, alert: Alert) -> FilterResult | None:
        """Tag a real X-ray transient with a galaxy within 50 Mpc inside its 90 % region; name the nearest."""
        if not (is_real(alert) and alert.messenger == "xray" and alert.mission in self.missions):
            return None
        galaxies = [
            m
            for m in catalog_matches(alert, {self.galaxy_catalog})
            if m.distance is not None and math.isfinite(m.distance) and m.distance <= self.max_distance
        ]
        best = nearest(galaxies)
        if best is None or best.distance is None:
            return None
        return FilterResult(
            tags=("xray-near-galaxy",),
            properties={
                "galaxy": best.source_id,
                "galaxy_distance": best.distance,
                "galaxy_separation": best.separation,
                "n_galaxies": len(galaxies),
            },
        )

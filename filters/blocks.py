# SPDX-License-Identifier: Apache-2.0
"""Shared predicates of the built-in filters.

Small pure functions of an :class:`~broker.model.Alert`, in the manner of
fink-filters' ``blocks.py``: each built-in filter is a few of these joined by
``and``, so that a criterion reads like its science case and each block is
tested once.  Units: angles in deg, false-alarm rates in Hz, distances in Mpc.

Examples
--------
>>> from broker.formats import parse
>>> from broker.replay import sample_dir
>>> swift = parse((sample_dir() / "voevent/swift/finkmm_swift_voevent_number_392.xml").read_bytes())
>>> is_real(swift), swift.region.radius, swift.region.containment
(True, 0.05, 0.9)
>>> error_radius_90(swift)
0.05
>>> gbm = parse((sample_dir() / "voevent/fermi/gwcelery_fermi_grb_gcn.xml").read_bytes())
>>> gbm.region.radius, gbm.region.containment
(5.6, 0.68)
>>> round(error_radius_90(gbm), 3)  # a 1-sigma (68 %) radius scaled to 90 %
7.961
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from broker.formats.common import SECONDS_PER_YEAR
from broker.model import (
    Alert,
    CatalogMatch,
    Circle,
    Ellipse,
    Point,
    PropertyValue,
    Rectangle,
    gaussian_radius_scale,
)

__all__ = [
    "BLAZAR_CLASSES",
    "CATALOG_ANNOTATOR",
    "ONE_PER_YEAR_HZ",
    "catalog_matches",
    "error_radius_90",
    "gaussian_radius_scale",
    "is_real",
    "match_property",
    "nearest",
    "separation_deg",
]

ONE_PER_YEAR_HZ = 1.0 / SECONDS_PER_YEAR
"""One per Julian year (365.25 d), in Hz: 3.1688e-8 Hz."""

CATALOG_ANNOTATOR = "catalogs"
"""Name of the annotator whose matches :func:`catalog_matches` reads (``requires = ("annotations.catalogs",)``)."""

BLAZAR_CLASSES = frozenset({"bll", "fsrq", "bcu"})
"""Fermi-LAT (4FGL / 4LAC) source classes that are blazars: BL Lac, FSRQ, blazar of uncertain type.

Lower case is an association and upper case a firm identification in the
catalogs; both count (compare in lower case).
"""


def is_real(alert: Alert) -> bool:
    """Whether ``alert`` is a real alert: neither a test (drill, mock, injection) nor a retraction.

    Examples
    --------
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> mock = parse((sample_dir() / "voevent/lvc/MS181101ab-1-Preliminary.xml").read_bytes())
    >>> mock.is_test, is_real(mock)
    (True, False)
    """
    return not alert.is_test and alert.kind != "retraction"


def separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance (deg) between two positions given in deg (Vincenty's formula, exact at all angles)."""
    la1, la2 = math.radians(dec1), math.radians(dec2)
    dlon = math.radians(ra2 - ra1)
    num = math.hypot(
        math.cos(la2) * math.sin(dlon),
        math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(dlon),
    )
    den = math.sin(la1) * math.sin(la2) + math.cos(la1) * math.cos(la2) * math.cos(dlon)
    return math.degrees(math.atan2(num, den))


def error_radius_90(alert: Alert, assume_containment: float | None = None) -> float | None:
    """Radius (deg) of the alert's error region at 90 % containment, or None if it cannot be told.

    The radius of the region as stated is its circle radius (:class:`Circle`),
    its semi-major axis (:class:`Ellipse`: the circle holding the ellipse), or
    the largest centre-to-corner distance (:class:`Rectangle`: the circle
    holding the quadrilateral).  A circle radius stated at exactly 90 %
    (the main one or one of ``other_radii``) is used as it is.  Otherwise
    the radius is scaled from its stated containment to 90 % as for a
    circular 2-D Gaussian (:func:`gaussian_radius_scale`: 68 % radii grow by
    1.4216, 95 % radii shrink by 0.8767); a region stated at 100 % holds the
    90 % region, and its own radius is returned.  Systematic errors the
    notice does not include are not added.

    Parameters
    ----------
    alert
        The alert.
    assume_containment
        Containment to assume when the notice states none; with the default
        ``None`` such a region gives ``None``.

    Returns
    -------
    float or None
        The 90 % radius in deg; ``None`` when the alert has no region, only a
        best position (:class:`Point`), or a region of unknown containment
        and no ``assume_containment``.

    Examples
    --------
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> svom = parse((sample_dir() / "voevent/svom/gwcelery_svom_grb_template.xml").read_bytes())
    >>> svom.region.radius, svom.region.containment
    (0.1, None)
    >>> error_radius_90(svom) is None
    True
    >>> round(error_radius_90(svom, assume_containment=0.68), 4)
    0.1422
    """
    region = alert.region
    if region is None or isinstance(region, Point):
        return None
    if isinstance(region, Circle):
        for c, r in ((region.containment, region.radius), *((o.containment, o.radius) for o in region.other_radii)):
            if c is not None and math.isclose(c, 0.9):
                return r
        radius = region.radius
    elif isinstance(region, Ellipse):
        radius = region.semi_major
    elif isinstance(region, Rectangle):
        radius = max(separation_deg(region.ra, region.dec, ra, dec) for ra, dec in region.corners)
    else:  # pragma: no cover - Region is a closed union
        raise TypeError(f"unknown region type {type(region).__name__}")
    containment = region.containment if region.containment is not None else assume_containment
    if containment is None or containment <= 0.0:
        return None
    if containment >= 1.0:
        return radius
    return radius * gaussian_radius_scale(containment)


def catalog_matches(alert: Alert, catalogs: Collection[str], in_region: bool = True) -> tuple[CatalogMatch, ...]:
    """Matches of the catalog annotator from the named catalogs, in the annotator's order.

    Parameters
    ----------
    alert
        An alert; its ``catalogs`` annotation (status ``ok``) is read.
    catalogs
        Catalog names as registered (e.g. ``{"4fgl-dr4", "3hsp"}``).
    in_region
        Keep only sources inside the alert's 90 % region
        (``source_in_region`` true); with False, every reported match.

    Returns
    -------
    tuple of CatalogMatch
        Empty when the alert has no ``ok`` catalog annotation.
    """
    ann = alert.annotation(CATALOG_ANNOTATOR)
    if ann is None or ann.status != "ok":
        return ()
    return tuple(m for m in ann.matches if m.catalog in catalogs and (not in_region or m.source_in_region is True))


def nearest(matches: Iterable[CatalogMatch]) -> CatalogMatch | None:
    """The match closest to the alert's best position (smallest ``separation``, deg), or None if there is none."""
    return min(matches, key=lambda m: m.separation, default=None)


def match_property(match: CatalogMatch, name: str) -> PropertyValue | None:
    """The property ``name`` of ``match`` (a catalog column), the name compared without case (``CLASS`` = ``class``)."""
    wanted = name.lower()
    for key, value in match.properties.items():
        if key.lower() == wanted:
            return value
    return None

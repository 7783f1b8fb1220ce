# SPDX-License-Identifier: Apache-2.0
"""Built-in gamma-ray burst filter: bursts localized well enough for a narrow-field telescope."""

from __future__ import annotations

from broker.filtering import Filter, FilterResult
from broker.model import Alert
from filters.blocks import error_radius_90, is_real

__all__ = ["WellLocalizedGRB"]


class WellLocalizedGRB(Filter):
    """Gamma-ray bursts whose 90 % error radius is below 1 deg.

    Criterion: a real (not test, not retracted) gamma-ray alert (Swift BAT,
    Fermi, INTEGRAL, SVOM, AGILE, ...) not flagged ``Def_NOT_a_GRB`` by its
    instrument, whose error region has a 90 % radius strictly below 1 deg, a
    field that optical and X-ray telescopes with ~1 deg fields of view can
    cover in one or a few pointings.

    The 90 % radius is :func:`~filters.blocks.error_radius_90`: a radius at
    another containment is scaled as for a circular 2-D Gaussian (a Fermi GBM
    68 % radius grows by a factor 1.4216), an ellipse counts by its
    semi-major axis and a quadrilateral by its farthest corner.  A region of
    unstated containment (the LVK-internal SVOM/Swift/Fermi templates, GBM
    sub-threshold notices) is taken as a 68 % region, the smallest
    containment any GCN stream quotes, so that its 90 % radius is not
    underestimated.  Systematic errors the notice leaves out (e.g. GBM ground
    positions, statistical only) are not added.  Alerts with only a best
    position (no stated error) or no position are not tagged.

    Examples
    --------
    >>> from broker.filtering import run_filter
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> swift = parse((sample_dir() / "voevent/swift/finkmm_swift_voevent_number_392.xml").read_bytes())
    >>> run_filter(WellLocalizedGRB(), swift)
    FilterResult(tags=('grb-well-localized',), properties={'error_radius_90': 0.05})
    >>> gbm = parse((sample_dir() / "voevent/fermi/finkmm_fermi_voevent_number_193.xml").read_bytes())
    >>> run_filter(WellLocalizedGRB(), gbm)
    FilterResult(tags=(), properties={})
    """

    name = "grb-well-localized"
    version = "1.0.0"
    description = "Real gamma-ray burst alerts with a 90 % error radius below 1 deg."
    requires = ("region",)
    tags = {"grb-well-localized": "gamma-ray burst with a 90 % error radius below 1 deg"}
    properties = {"error_radius_90": "radius of the error region at 90 % containment (deg)"}

    max_radius = 1.0
    """The 90 % radius must be strictly below this (deg)."""
    assumed_containment = 0.68
    """Containment assumed for a region whose notice states none."""

    def run(self, alert: Alert) -> FilterResult | None:
        """Tag a real gamma-ray burst whose 90 % error radius is below 1 deg."""
        if not (is_real(alert) and alert.messenger == "gamma") or alert.properties.get("def_not_a_grb") is True:
            return None
        radius = error_radius_90(alert, assume_containment=self.assumed_containment)
        if radius is None or radius >= self.max_radius:
            return None
        return FilterResult(tags=("grb-well-localized",), properties={"error_radius_90": radius})

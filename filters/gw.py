# SPDX-License-Identifier: Apache-2.0
"""Built-in gravitational-wave filter: significant candidates, and those likely to make a kilonova."""

from __future__ import annotations

from broker.filtering import Filter, FilterResult
from broker.model import Alert, PropertyValue
from filters.blocks import ONE_PER_YEAR_HZ, is_real

__all__ = ["SignificantGW", "p_neutron_star_binary"]


def p_neutron_star_binary(alert: Alert) -> float | None:
    """P(BNS) + P(NSBH) of the LVK source classification (dimensionless), or None when neither is given.

    An absent class counts as 0 when the other is given; O2-era notices (no
    classification at all) give None.
    """
    cls = alert.classification
    if "BNS" not in cls and "NSBH" not in cls:
        return None
    return cls.get("BNS", 0.0) + cls.get("NSBH", 0.0)


def _probability(alert: Alert, key: str) -> float | None:
    value = alert.properties.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class SignificantGW(Filter):
    """Significant gravitational-wave candidates, and among them kilonova candidates.

    ``gw-significant``: a real (not test, not mock, not retracted)
    gravitational-wave alert with a false-alarm rate below one per year,
    ``far < 1 / 31557600 s = 3.169e-8 Hz`` (Julian year; strictly below).
    This is stricter than LVK's own ``significant`` flag of O4 (FAR below one
    per month for CBC after a trials factor, one per year for bursts: LVK
    Public Alerts User Guide, "Significance"), so that a telescope following
    this tag sees about one noise event per year of running time; the
    upstream flag is not read.

    ``kilonova-candidate``: a ``gw-significant`` alert that, by LVK's
    low-latency EM-bright and source-class estimates, likely holds a neutron
    star and left matter outside the remnant:

    * ``HasNS >= 0.5`` and ``HasRemnant >= 0.5`` (probabilities that a
      component is lighter than 3 solar masses, and that some matter stays
      outside the final compact object, a necessary condition for a kilonova
      or a short GRB: Chatterjee et al. 2020, ApJ 896, 54), and
    * ``P(BNS) + P(NSBH) >= 0.5`` (Kapadia et al. 2020, CQG 37, 045007;
      checked when the notice gives a classification: O2-era notices, such as
      GW170817's, have none and are judged on HasNS/HasRemnant alone).

    LVK publishes no threshold for these; 0.5 (more likely than not) is our
    choice, applied to each of the three.

    Examples
    --------
    >>> from broker.filtering import run_filter
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> folder = sample_dir() / "voevent/lvc"
    >>> gw170817 = parse((folder / "gwcelery_G298048-1-Initial.xml").read_bytes())
    >>> run_filter(SignificantGW(), gw170817).tags
    ('gw-significant', 'kilonova-candidate')
    >>> early = parse((folder / "S230524x-1-EarlyWarning.xml").read_bytes())
    >>> round(early.far / ONE_PER_YEAR_HZ, 2)  # per year: above the threshold
    2.28
    >>> run_filter(SignificantGW(), early)
    FilterResult(tags=(), properties={})
    """

    name = "gw-significant"
    version = "1.0.0"
    description = "Real GW candidates with FAR below 1/yr; kilonova candidates among them (NS binary with remnant)."
    requires = ("far",)
    tags = {
        "gw-significant": "real gravitational-wave candidate with a false-alarm rate below one per year",
        "kilonova-candidate": "significant GW candidate likely to hold a neutron star and leave matter outside "
        "the remnant (HasNS >= 0.5, HasRemnant >= 0.5, P(BNS) + P(NSBH) >= 0.5 when classified)",
    }
    properties = {
        "far_per_year": "false-alarm rate (yr^-1, Julian year)",
        "p_bns_nsbh": "P(BNS) + P(NSBH) of the LVK source classification (dimensionless, 0-1)",
        "has_ns": "LVK HasNS: probability that a component is a neutron star (dimensionless, 0-1)",
        "has_remnant": "LVK HasRemnant: probability of matter outside the final compact object (dimensionless, 0-1)",
    }

    max_far = ONE_PER_YEAR_HZ
    """False-alarm rate the alert must be strictly below (Hz)."""
    kilonova_threshold = 0.5
    """Minimum of HasNS, HasRemnant and P(BNS) + P(NSBH) for ``kilonova-candidate`` (dimensionless)."""

    def run(self, alert: Alert) -> FilterResult | None:
        """Tag a real GW alert with FAR < 1/yr; add ``kilonova-candidate`` when the EM-bright estimates say so."""
        if not (is_real(alert) and alert.messenger == "gw" and alert.far is not None and alert.far < self.max_far):
            return None
        p_ns = p_neutron_star_binary(alert)
        has_ns = _probability(alert, "has_ns")
        has_remnant = _probability(alert, "has_remnant")
        props: dict[str, PropertyValue] = {"far_per_year": alert.far / ONE_PER_YEAR_HZ}
        for key, value in (("p_bns_nsbh", p_ns), ("has_ns", has_ns), ("has_remnant", has_remnant)):
            if value is not None:
                props[key] = value
        t = self.kilonova_threshold
        kilonova = (
            has_ns is not None
            and has_ns >= t
            and has_remnant is not None
            and has_remnant >= t
            and (p_ns is None or p_ns >= t)
        )
        tags = ("gw-significant", "kilonova-candidate") if kilonova else ("gw-significant",)
        return FilterResult(tags=tags, properties=props)

# SPDX-License-Identifier: Apache-2.0
"""Alert classes and the coincidence rules between them.

An alert belongs to zero or more *coincidence classes* (:func:`alert_classes`);
a :class:`Rule` pairs two classes with a time window and says how the joint
false-alarm rate is computed.  The default rules are RAVEN's, the LVK
low-latency GRB/SN coincidence search run by gwcelery (ligo-raven; windows
from the LVK Public Alerts User Guide, "Multi-messenger" / "RAVEN"), plus
neutrino rules (IceCube/LVK: ±500 s around a GW candidate; the neutrino-GRB
window is configurable).

Window convention
-----------------
A rule has sides ``a`` and ``b`` and a window ``[low, high]`` on
``t_b - t_a`` (s), the sign convention of the IGWN alert schema's
``external_coinc.time_difference``.  RAVEN states its windows as the
*GW candidate's* time relative to the external trigger's: GRB with CBC
[-5, +1] s means GW times in [t_grb - 5, t_grb + 1].  Written as
``t_grb - t_gw`` (side a: GW, side b: GRB) that is [-1, +5]; the defaults below
are RAVEN's windows converted this way:

=============================  ===================  ==================
rule (a/b)                     RAVEN (t_gw - t_ext)  here (t_b - t_a)
=============================  ===================  ==================
gw-cbc/grb                     [-5, +1]             [-1, +5]
gw-cbc/grb-subthreshold-fermi  [-11, +1]            [-1, +11]
gw-cbc/grb-subthreshold-swift  [-20, +10]           [-10, +20]
gw-burst/grb                   [-600, +60]          [-60, +600]
gw-burst/sn-neutrino           [-10, +10]           [-10, +10]
gw-cbc/neutrino                ±500                 [-500, +500]
gw-burst/neutrino              ±500                 [-500, +500]
neutrino/grb                   (configurable)       default [-500, +500]
=============================  ===================  ==================
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.coincidence.far import GRB_RATE_HZ, SUBTHRESHOLD_GRB_RATE_HZ
from broker.errors import ConfigError
from broker.model import Alert

SECONDS_PER_YEAR = 365.0 * 86400.0

#: Background rates of the classes (Hz) used when side b has no FAR of its own.
#: GRBs: RAVEN's combined rate of independent GRB discoveries (310 / yr); sub-threshold
#: GRBs: RAVEN's threshold + sub-threshold rate (375 / yr); high-energy neutrino alerts:
#: IceCube Gold + Bronze tracks (~30 / yr, Blaufuss et al. 2019, ICRC 1021);
#: supernova neutrino bursts: SNEWS' false-alert target (1 / century).
CLASS_RATES_HZ: dict[str, float] = {
    "grb": GRB_RATE_HZ,
    "grb-subthreshold-fermi": SUBTHRESHOLD_GRB_RATE_HZ,
    "grb-subthreshold-swift": SUBTHRESHOLD_GRB_RATE_HZ,
    "neutrino": 30.0 / SECONDS_PER_YEAR,
    "sn-neutrino": 1.0 / (100.0 * SECONDS_PER_YEAR),
}

CLASSES: tuple[str, ...] = (
    "gw-cbc",
    "gw-burst",
    "grb",
    "grb-subthreshold-fermi",
    "grb-subthreshold-swift",
    "neutrino",
    "sn-neutrino",
)

#: Missions whose gamma-ray notices announce GRB triggers (not LAT flares, not TeV).
_GRB_MISSIONS = {
    "fermi", "swift", "integral", "svom", "agile", "glowbug", "burstcube", "konus-wind", "hete", "suzaku",
    "near", "batse", "calet", "astrosat", "insight-hxmt", "gecam", "grbalpha",
}
_NOT_GRB_INSTRUMENTS = {"lat", "uvot", "xrt"}
_SN_MISSIONS = {"snews", "super-kamiokande"}
_CBC_PIPELINES = {"gstlal", "pycbc", "mbta", "spiir"}
_BURST_PIPELINES = {"cwb", "olib", "mly"}


def alert_classes(alert: Alert) -> tuple[str, ...]:
    """The coincidence classes of ``alert`` (empty: it takes part in no rule).

    * ``gw-cbc`` / ``gw-burst``: GW candidates by search group (the ``group``
      property, else the pipeline); a retraction has none (it withdraws);
    * ``grb``: triggers of GRB monitors (Fermi GBM, Swift BAT, INTEGRAL, SVOM,
      AGILE, ...), not Fermi LAT flares, Swift UVOT/XRT or TeV notices;
    * ``grb-subthreshold-fermi``: Fermi GBM sub-threshold and targeted-search
      triggers; ``grb-subthreshold-swift``: Swift BAT-GUANO (targeted
      sub-threshold); these are not also ``grb``;
    * ``sn-neutrino``: supernova neutrino bursts (SNEWS, Super-Kamiokande SN watch);
    * ``neutrino``: every other neutrino alert (IceCube, KM3NeT, AMON, ...).
    """
    if alert.kind == "retraction":
        return ()
    mission = alert.mission.lower()
    instrument = (alert.instrument or "").lower()
    notice = alert.notice_type.lower()
    if alert.messenger == "gw":
        group = str(alert.properties.get("group", "")).lower()
        pipeline = str(alert.properties.get("pipeline", "")).lower()
        if group == "burst" or pipeline in _BURST_PIPELINES:
            return ("gw-burst",)
        if group == "cbc" or pipeline in _CBC_PIPELINES or not group:
            return ("gw-cbc",)
        return ()
    if alert.messenger == "neutrino":
        return ("sn-neutrino",) if mission in _SN_MISSIONS else ("neutrino",)
    if alert.messenger == "gamma" and mission in _GRB_MISSIONS and instrument not in _NOT_GRB_INSTRUMENTS:
        if mission == "fermi" and ("subthresh" in notice or "targeted" in notice or "targeted" in instrument):
            return ("grb-subthreshold-fermi",)
        if mission == "swift" and ("guano" in instrument or "guano" in notice or "subthreshold" in notice):
            return ("grb-subthreshold-swift",)
        return ("grb",)
    return ()


class Rule(BaseModel):
    """One coincidence rule: two classes, a window on ``t_b - t_a`` (s), a tag.

    Parameters
    ----------
    name
        Unique name, ``<a>/<b>`` by default.
    a, b
        The two alert classes (:data:`CLASSES`).
    window
        ``[low, high]`` on ``t_b - t_a``, s (see the module docstring).
    tag
        Pair-specific tag the newer alert gets (besides ``coincidence``).
    rate_b_hz
        Background rate of side b for the joint FAR when b has no FAR of its
        own (Hz); default from :data:`CLASS_RATES_HZ`.
    targeted
        Use RAVEN's sub-threshold *targeted* formula (product of two uniform
        FARs) when both sides have a FAR, with these thresholds (Hz): GW and
        external FAR thresholds of the search.
    spatial
        Require the spatial test to pass (default); False records the
        statistic but pairs on time alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    a: str
    b: str
    window: tuple[float, float]
    tag: str
    rate_b_hz: float | None = Field(default=None, gt=0)
    targeted: tuple[float, float] | None = None
    spatial: bool = True

    @model_validator(mode="after")
    def _check(self) -> Rule:
        for side in (self.a, self.b):
            if side not in CLASSES:
                raise ValueError(f"unknown alert class {side!r}; known: {', '.join(CLASSES)}")
        if self.window[0] > self.window[1]:
            raise ValueError(f"window {list(self.window)} is inverted (low > high)")
        if not self.name:
            object.__setattr__(self, "name", f"{self.a}/{self.b}")
        return self

    @property
    def background_rate_b(self) -> float | None:
        """Background rate of side b, Hz (None if unknown)."""
        return self.rate_b_hz if self.rate_b_hz is not None else CLASS_RATES_HZ.get(self.b)


def default_rules(neutrino_grb_window_s: tuple[float, float] = (-500.0, 500.0)) -> tuple[Rule, ...]:
    """RAVEN's rules plus the neutrino rules (see the module docstring table)."""
    return (
        Rule(a="gw-cbc", b="grb", window=(-1.0, 5.0), tag="gw-grb"),
        Rule(a="gw-cbc", b="grb-subthreshold-fermi", window=(-1.0, 11.0), tag="gw-grb-subthreshold",
             targeted=(1.0 / 86400.0, 1.0 / 10000.0)),
        Rule(a="gw-cbc", b="grb-subthreshold-swift", window=(-10.0, 20.0), tag="gw-grb-subthreshold",
             targeted=(2.0 / 86400.0, 1.0 / 1000.0)),
        Rule(a="gw-burst", b="grb", window=(-60.0, 600.0), tag="gw-grb"),
        Rule(a="gw-burst", b="sn-neutrino", window=(-10.0, 10.0), tag="gw-sn-neutrino"),
        Rule(a="gw-cbc", b="neutrino", window=(-500.0, 500.0), tag="gw-neutrino"),
        Rule(a="gw-burst", b="neutrino", window=(-500.0, 500.0), tag="gw-neutrino"),
        Rule(a="neutrino", b="grb", window=neutrino_grb_window_s, tag="neutrino-grb"),
    )


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


def load_rules(path: Path | None, neutrino_grb_window_s: tuple[float, float] = (-500.0, 500.0)) -> tuple[Rule, ...]:
    """The rules in ``path`` (YAML: ``rules: [{a, b, window, tag, ...}]``), else :func:`default_rules`.

    Raises
    ------
    ConfigError
        The file is unreadable, malformed, names an unknown class, has an
        inverted window, or two rules share a name.
    """
    if path is None:
        return default_rules(neutrino_grb_window_s)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        rules = tuple(_RulesFile.model_validate(data).rules)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"coincidence rules {path}: {exc}") from exc
    _check_unique(rules, str(path))
    return rules


def _check_unique(rules: Sequence[Rule], where: str) -> None:
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"coincidence rules {where}: duplicate rule names {dupes}")

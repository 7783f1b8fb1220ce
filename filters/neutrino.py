# SPDX-License-Identifier: Apache-2.0
"""Built-in neutrino filters: likely astrophysical neutrinos, and neutrinos pointing at blazars.

Both look only at real (not test, not retracted) high-energy neutrino alerts:
IceCube, AMON, KM3NeT, ...; the MeV supernova-neutrino alerts of SNEWS and
Super-Kamiokande are left out, since neither criterion applies to them.
"""

from __future__ import annotations

from broker.filtering import Filter, FilterResult
from broker.model import Alert, PropertyValue
from filters.blocks import BLAZAR_CLASSES, catalog_matches, is_real, match_property, nearest

__all__ = ["HighSignalnessNeutrino", "NeutrinoBlazar", "is_gold_stream", "is_high_energy_neutrino", "signalness"]

SUPERNOVA_NEUTRINO_MISSIONS = frozenset({"SNEWS", "Super-Kamiokande"})
"""Missions whose neutrino alerts are MeV supernova bursts, not single high-energy neutrinos."""

GOLD_STREAM = 24
"""AMON ``Stream`` number of IceCube Gold track alerts (25 is Bronze, 26 Cascade)."""


def is_high_energy_neutrino(alert: Alert) -> bool:
    """Whether ``alert`` is a neutrino alert of a high-energy (TeV-PeV) observatory, not a supernova burst."""
    return alert.messenger == "neutrino" and alert.mission not in SUPERNOVA_NEUTRINO_MISSIONS


def signalness(alert: Alert) -> float | None:
    """Probability (0-1) that the neutrino is astrophysical, as the notice states it, or None.

    AMON/IceCube VOEvents and the GCN Classic translations call it
    ``signalness``; the GCN unified schema of IceCube (and other neutrino
    notices) calls it ``p_astro`` (core ``Statistics``: probability that the
    event is astrophysical), which is read only for neutrino alerts.
    """
    for key in ("signalness", "p_astro"):
        value = alert.properties.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def is_gold_stream(alert: Alert) -> bool:
    """Whether ``alert`` belongs to IceCube's Gold track stream, by any of the ways notices say so.

    * GCN Classic VOEvent: packet type 173, ``ICECUBE_ASTROTRACK_GOLD``, or
      the AMON ``Stream`` parameter 24 of an IceCube notice;
    * GCN unified JSON (IceCube ``single_neutrino_alerts``): ``pipeline``
      ``"Gold Track Alert"``;
    * GCN Classic translated to JSON (AMON, unmerged gcn-schema PR #161):
      ``notice_type`` ``"Astrotrack Gold"``.

    Any one suffices: IceCube's edited fixture ``sample_astrotrack_alert_2021.xml``
    has packet type 173 and a Gold IVORN but ``Stream`` 25 (Bronze).
    """
    props = alert.properties
    return (
        alert.notice_type == "ICECUBE_ASTROTRACK_GOLD"
        or (alert.mission == "IceCube" and props.get("amon_stream") == GOLD_STREAM)
        or props.get("pipeline") == "Gold Track Alert"
        or props.get("classic_notice_type") == "Astrotrack Gold"
    )


class HighSignalnessNeutrino(Filter):
    """High-energy neutrinos likely to be astrophysical: IceCube Gold, or signalness of at least 0.5.

    Criterion: a real (not test, not retracted) high-energy neutrino alert
    that is in IceCube's Gold track stream (:func:`is_gold_stream`) or whose
    signalness (probability of astrophysical origin, dimensionless) is
    >= 0.5.  IceCube defines the Gold stream as tracks with an average
    signalness of at least 50 % and Bronze as 30-50 % (Blaufuss et al. 2019,
    ICRC, arXiv:1908.04884); the signalness threshold extends the same bar to
    every stream that states one (cascades, retired HESE/EHE, unified-schema
    ``p_astro``).  A Gold-stream event is kept even when its own signalness is
    lower, as Gold is a selection, not a per-event value.

    Examples
    --------
    >>> from broker.filtering import run_filter
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> folder = sample_dir() / "voevent/icecube_amon"
    >>> cascade = parse((folder / "finkmm_icecube_voevent_number_825.xml").read_bytes())
    >>> run_filter(HighSignalnessNeutrino(), cascade)
    FilterResult(tags=('high-signalness-neutrino',), properties={'signalness': 0.9001, 'gold_stream': False})
    >>> gold = parse((folder / "sample_astrotrack_alert.xml").read_bytes())
    >>> run_filter(HighSignalnessNeutrino(), gold).properties
    {'signalness': 0.0457, 'gold_stream': True}
    >>> bronze = parse((folder / "finkmm_icecube_voevent_number_3028.xml").read_bytes())
    >>> run_filter(HighSignalnessNeutrino(), bronze)
    FilterResult(tags=(), properties={})
    """

    name = "high-signalness-neutrino"
    version = "1.0.0"
    description = "Real high-energy neutrino alerts in IceCube's Gold stream or with signalness >= 0.5."
    tags = {"high-signalness-neutrino": "likely astrophysical neutrino: IceCube Gold stream or signalness >= 0.5"}
    properties = {
        "signalness": "probability that the neutrino is astrophysical, as stated by the notice (dimensionless, 0-1)",
        "gold_stream": "the alert belongs to IceCube's Gold track stream (bool)",
    }

    threshold = 0.5
    """Minimum signalness (dimensionless)."""

    def run(self, alert: Alert) -> FilterResult | None:
        """Tag a real high-energy neutrino alert of the Gold stream or with signalness >= 0.5."""
        if not (is_real(alert) and is_high_energy_neutrino(alert)):
            return None
        s = signalness(alert)
        gold = is_gold_stream(alert)
        if not (gold or (s is not None and s >= self.threshold)):
            return None
        props: dict[str, PropertyValue] = {"gold_stream": gold} if s is None else {"signalness": s, "gold_stream": gold}
        return FilterResult(tags=("high-signalness-neutrino",), properties=props)


class NeutrinoBlazar(Filter):
    """High-energy neutrinos with a gamma-ray or high-synchrotron-peaked blazar inside their 90 % region.

    Criterion: a real (not test, not retracted) high-energy neutrino alert
    whose catalog annotation lists at least one source inside the alert's
    90 % region (``source_in_region``) from

    * 4FGL-DR4 (``4fgl-dr4``, Fermi-LAT 14-year catalog, Ballet et al. 2023,
      arXiv:2307.12546) with ``CLASS1`` ``bll``, ``fsrq`` or ``bcu``;
    * 4LAC-DR3 (``4lac-dr3``, Ajello et al. 2022, ApJS 263, 24) with ``CLASS``
      ``bll``, ``fsrq`` or ``bcu`` (its radio galaxies, Seyferts and other AGN
      are not blazars);
    * 3HSP (``3hsp``, Chang et al. 2019, A&A 632, A77), every source.

    The class is the match property ``class`` (the catalog's ``CLASS1`` for
    4FGL, ``CLASS`` for 4LAC, as ``annotators/data/catalogs/bundled.yaml``
    registers them; either case); a 4FGL or 4LAC match without it is not
    counted.
    The motivating case is IceCube-170922A and TXS 0506+056 (IceCube
    Collaboration 2018, Science 361, eaat1378).  A large region (cascades,
    tens of deg) holds blazars by chance: ``n_blazars`` says how many.

    Examples
    --------
    The filter needs the catalog annotation and is skipped without it:

    >>> from broker.filtering import run_filter
    >>> from broker.formats import parse
    >>> from broker.replay import sample_dir
    >>> cascade = parse((sample_dir() / "voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml").read_bytes())
    >>> run_filter(NeutrinoBlazar(), cascade) is None
    True
    """

    name = "neutrino-blazar"
    version = "1.0.0"
    description = "Real high-energy neutrino alerts with a 4FGL/4LAC blazar or a 3HSP source in their 90 % region."
    requires = ("annotations.catalogs",)
    tags = {"neutrino-blazar": "neutrino whose 90 % region holds a 4FGL-DR4/4LAC-DR3 blazar or a 3HSP blazar"}
    properties = {
        "blazar": "name of the blazar nearest to the neutrino's best position (catalog source id)",
        "blazar_catalog": "catalog of that blazar (4fgl-dr4, 4lac-dr3 or 3hsp)",
        "blazar_separation": "angular distance from the neutrino's best position to that blazar (deg)",
        "n_blazars": "blazar matches listed by the annotator inside the region, over the three catalogs (a source "
        "in 4FGL and 4LAC counts twice; the annotator may cap the matches it lists per catalog)",
    }

    fermi_catalogs = frozenset({"4fgl-dr4", "4lac-dr3"})
    """Fermi-LAT catalogs, counted when the match's ``class`` is a blazar class."""
    class_property = "class"
    """Match property holding the Fermi-LAT source class."""
    blazar_catalogs = frozenset({"3hsp"})
    """Catalogs whose every source is a blazar."""

    def run(self, alert: Alert) -> FilterResult | None:
        """Tag a real high-energy neutrino with a blazar inside its 90 % region; name the nearest."""
        if not (is_real(alert) and is_high_energy_neutrino(alert)):
            return None
        matches = [
            m
            for m in catalog_matches(alert, {*self.fermi_catalogs, *self.blazar_catalogs})
            if m.catalog in self.blazar_catalogs
            or str(match_property(m, self.class_property) or "").strip().lower() in BLAZAR_CLASSES
        ]
        best = nearest(matches)
        if best is None:
            return None
        return FilterResult(
            tags=("neutrino-blazar",),
            properties={
                "blazar": best.source_id,
                "blazar_catalog": best.catalog,
                "blazar_separation": best.separation,
                "n_blazars": len(matches),
            },
        )

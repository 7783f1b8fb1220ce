# SPDX-License-Identifier: Apache-2.0
"""The built-in science filters.

Each is a :class:`broker.filtering.Filter`; every tag it emits is published by
the broker to ``<prefix>.tag.<tag>``.  All of them pass over tests, drills,
mock events and retractions (:func:`filters.blocks.is_real`).

:class:`~filters.neutrino.HighSignalnessNeutrino`, tag ``high-signalness-neutrino``
    High-energy neutrino of IceCube's Gold stream, or with signalness >= 0.5.
:class:`~filters.neutrino.NeutrinoBlazar`, tag ``neutrino-blazar``
    High-energy neutrino with a 4FGL-DR4 / 4LAC-DR3 blazar (bll, fsrq, bcu)
    or a 3HSP source inside its 90 % region (needs ``annotations.catalogs``).
:class:`~filters.gw.SignificantGW`, tags ``gw-significant`` and ``kilonova-candidate``
    GW candidate with FAR < 1/yr (3.169e-8 Hz); a kilonova candidate also has
    HasNS, HasRemnant and P(BNS) + P(NSBH) >= 0.5.
:class:`~filters.grb.WellLocalizedGRB`, tag ``grb-well-localized``
    Gamma-ray burst with a 90 % error radius below 1 deg.
:class:`~filters.xray.XrayNearGalaxy`, tag ``xray-near-galaxy``
    Einstein Probe, MAXI or Swift X-ray alert with a 50MGC galaxy within
    50 Mpc inside its 90 % region (needs ``annotations.catalogs``).

Shared predicates (real alert, 90 % error radius, catalog matches) are in
:mod:`filters.blocks`.

Examples
--------
>>> sorted(t for f in BUILTIN_FILTERS for t in f.tags)  # doctest: +NORMALIZE_WHITESPACE
['grb-well-localized', 'gw-significant', 'high-signalness-neutrino', 'kilonova-candidate',
 'neutrino-blazar', 'xray-near-galaxy']
"""

from __future__ import annotations

from broker.filtering import Filter
from filters.grb import WellLocalizedGRB
from filters.gw import SignificantGW
from filters.neutrino import HighSignalnessNeutrino, NeutrinoBlazar
from filters.xray import XrayNearGalaxy

__all__ = [
    "BUILTIN_FILTERS",
    "HighSignalnessNeutrino",
    "NeutrinoBlazar",
    "SignificantGW",
    "WellLocalizedGRB",
    "XrayNearGalaxy",
]

BUILTIN_FILTERS: tuple[type[Filter], ...] = (
    HighSignalnessNeutrino,
    NeutrinoBlazar,
    SignificantGW,
    WellLocalizedGRB,
    XrayNearGalaxy,
)
"""Every built-in filter class, in the order of the table above."""

# SPDX-License-Identifier: Apache-2.0
"""Joint false-alarm rates of multi-messenger coincidences, as RAVEN computes them.

RAVEN (ligo-raven, ``ligo.raven.search.coinc_far``) is the LVK low-latency
search for GW candidates coincident with GRBs and supernova neutrino bursts
(Urban 2016, PhD thesis, UW-Milwaukee; Ashton et al. 2018, ApJ 860, 6;
Piotrzkowski et al. 2022, ApJ 939, 113 for the sub-threshold searches).  For a
GW candidate of false-alarm rate ``FAR_gw`` and an external trigger found in
the window ``[t_l, t_h]`` (s) around it:

* **temporal** (:func:`temporal_far`): ``FAR_t = (t_h - t_l) * R_ext * FAR_gw``,
  the rate at which the GW search produces candidates this significant *and*
  an independent external trigger lands in the window, with ``R_ext`` the
  background rate of external triggers: :data:`GRB_RATE_HZ` for GRBs,
  :data:`SUBTHRESHOLD_GRB_RATE_HZ` for RAVEN's ``SubGRB`` search;
* **targeted sub-threshold** (:func:`targeted_temporal_far`, RAVEN's
  ``SubGRBTargeted``, Fermi GBM targeted search and Swift BAT-GUANO): both
  FARs are uniform below the search thresholds, so their product has the
  product distribution ``P(Z <= z) = z (1 - ln(z / z_max))``, with
  ``z = (t_h - t_l) FAR_ext FAR_gw`` and ``z_max`` the same with the two
  thresholds;
* **spatio-temporal** (:func:`spatiotemporal_far`): ``FAR_st = FAR_t / I_Omega``,
  with ``I_Omega`` the sky-map overlap integral
  (:mod:`broker.coincidence.spatial`; Ashton et al. 2018, eq. 5): sky maps
  that agree better than chance (I > 1) lower the joint FAR.

All rates are in Hz, windows in s.  A year is 365 days of 86 400 s, as in
RAVEN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "FERMI_TARGETED_THRESHOLDS_HZ",
    "GRB_RATE_HZ",
    "SECONDS_PER_YEAR",
    "SUBTHRESHOLD_GRB_RATE_HZ",
    "SWIFT_TARGETED_THRESHOLDS_HZ",
    "JointFar",
    "joint_far",
    "spatiotemporal_far",
    "targeted_temporal_far",
    "temporal_far",
]

SECONDS_PER_YEAR = 365.0 * 86400.0
"""A year of 365 days (s), RAVEN's."""

GRB_RATE_HZ = 310.0 / SECONDS_PER_YEAR
"""Rate of independent GRB discoveries, Hz: Fermi GBM 236, Swift BAT 65, INTEGRAL ~5 and AGILE MCAL ~5 per year
(RAVEN's ``gcn_rate``)."""

SUBTHRESHOLD_GRB_RATE_HZ = (310.0 + 65.0) / SECONDS_PER_YEAR
"""Rate of GRBs including sub-threshold ones, Hz: :data:`GRB_RATE_HZ` plus 65 per year (RAVEN's ``SubGRB`` rate,
from an analysis by P. Shawhan, LIGO-T1900297)."""

FERMI_TARGETED_THRESHOLDS_HZ = (1.0 / 86400.0, 1.0 / 10000.0)
"""RAVEN's ``SubGRBTargeted`` thresholds for Fermi GBM: GW FAR 1 / day, GRB FAR 1 / 10 000 s (Hz)."""

SWIFT_TARGETED_THRESHOLDS_HZ = (2.0 / 86400.0, 1.0 / 1000.0)
"""RAVEN's ``SubGRBTargeted`` thresholds for Swift BAT-GUANO: GW FAR 2 / day, GRB FAR 1 / 1000 s (Hz)."""


def _width(window_s: tuple[float, float]) -> float:
    low, high = float(window_s[0]), float(window_s[1])
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        raise ValueError(f"window {window_s!r} is not a finite [low, high] interval (s)")
    return high - low


def _rate(value: float, name: str) -> float:
    v = float(value)
    if math.isnan(v) or v < 0:
        raise ValueError(f"{name} {value!r} is not a rate >= 0 (Hz)")
    return v


def temporal_far(window_s: tuple[float, float], far_a_hz: float, rate_b_hz: float) -> float:
    """RAVEN's temporal joint FAR: ``(t_h - t_l) * R_b * FAR_a``.

    Parameters
    ----------
    window_s
        The coincidence window ``(t_l, t_h)``, s (only its width matters).
    far_a_hz
        False-alarm rate of the candidate (the GW candidate in RAVEN), Hz.
    rate_b_hz
        Background rate of the other class (e.g. :data:`GRB_RATE_HZ`), Hz.

    Returns
    -------
    float
        Joint false-alarm rate, Hz.

    Raises
    ------
    ValueError
        If the window is inverted or not finite, or a rate is negative or NaN.

    Examples
    --------
    >>> f"{temporal_far((-1.0, 5.0), 1e-8, GRB_RATE_HZ):.4g}"  # a 1e-8 Hz GW candidate and a GRB, CBC window
    '5.898e-13'
    """
    return _width(window_s) * _rate(rate_b_hz, "rate_b_hz") * _rate(far_a_hz, "far_a_hz")


def targeted_temporal_far(
    window_s: tuple[float, float],
    far_gw_hz: float,
    far_grb_hz: float,
    far_gw_thresh_hz: float,
    far_grb_thresh_hz: float,
) -> float:
    """RAVEN's temporal joint FAR of the targeted sub-threshold GRB searches: ``z (1 - ln(z / z_max))``.

    ``z = (t_h - t_l) * FAR_grb * FAR_gw`` and ``z_max`` the same product with
    the two thresholds (:data:`FERMI_TARGETED_THRESHOLDS_HZ`,
    :data:`SWIFT_TARGETED_THRESHOLDS_HZ`): the product of two FARs uniform
    below their thresholds has this cumulative distribution (the product
    distribution of two uniform variables; Piotrzkowski et al. 2022).  RAVEN
    applies it to events below the thresholds only; above them (``z > z_max``)
    the expression would fall and turn negative, so the result is capped at
    ``z_max``, the joint FAR of the whole search.

    Parameters
    ----------
    window_s
        The coincidence window ``(t_l, t_h)``, s.
    far_gw_hz, far_grb_hz
        False-alarm rates of the GW candidate and of the GRB, Hz.
    far_gw_thresh_hz, far_grb_thresh_hz
        The search thresholds on them, Hz (> 0).

    Returns
    -------
    float
        Joint false-alarm rate, Hz (0 when either FAR is 0).

    Raises
    ------
    ValueError
        On an invalid window, a negative rate or a threshold that is not > 0.
    """
    width = _width(window_s)
    z = width * _rate(far_grb_hz, "far_grb_hz") * _rate(far_gw_hz, "far_gw_hz")
    thr_gw, thr_grb = _rate(far_gw_thresh_hz, "far_gw_thresh_hz"), _rate(far_grb_thresh_hz, "far_grb_thresh_hz")
    z_max = width * thr_grb * thr_gw
    if not z_max > 0:
        raise ValueError("the window and both thresholds must be > 0 for the targeted formula")
    if z == 0:
        return 0.0
    if z >= z_max:
        return z_max
    return z * (1.0 - math.log(z / z_max))


def spatiotemporal_far(temporal_far_hz: float, overlap: float | None) -> float | None:
    """RAVEN's spatio-temporal joint FAR: the temporal one divided by the sky-map overlap integral.

    Parameters
    ----------
    temporal_far_hz
        Temporal joint FAR, Hz.
    overlap
        The overlap integral I_Omega (:func:`broker.coincidence.spatial.compare`).

    Returns
    -------
    float or None
        ``temporal_far_hz / overlap`` in Hz; ``None`` when there is no overlap
        integral (one side has no localization: RAVEN then reports the
        temporal FAR only); ``inf`` for an overlap of 0, maps that exclude each
        other (RAVEN declines to compute it: "strong evidence against these
        events being coincident").

    Raises
    ------
    ValueError
        If the overlap is negative or NaN, or the FAR is not a rate.
    """
    far = _rate(temporal_far_hz, "temporal_far_hz")
    if overlap is None:
        return None
    i = float(overlap)
    if math.isnan(i) or i < 0:
        raise ValueError(f"overlap {overlap!r} is not >= 0")
    if i == 0:
        return math.inf
    return far / i


@dataclass(frozen=True)
class JointFar:
    """The joint false-alarm rates of one coincidence, Hz (None where they cannot be computed)."""

    temporal: float | None
    spatiotemporal: float | None


def joint_far(
    window_s: tuple[float, float],
    far_a_hz: float | None,
    far_b_hz: float | None,
    *,
    rate_a_hz: float | None = None,
    rate_b_hz: float | None = None,
    overlap: float | None = None,
    targeted: tuple[float, float] | None = None,
) -> JointFar:
    """Both joint FARs of a pair of alerts, whichever of them have a FAR of their own.

    * ``targeted`` (thresholds on side a's and side b's FAR, Hz) and both FARs
      known: :func:`targeted_temporal_far` (side a the GW candidate);
    * else side a has a FAR: RAVEN's formula :func:`temporal_far` with side
      b's background rate ``rate_b_hz`` (side b's own FAR, if any, is not
      used, as in RAVEN, which multiplies the GW FAR by the GRB rate);
    * else side b has a FAR: the same formula the other way round, with side
      a's background rate ``rate_a_hz``;
    * else (or without the rate needed): no joint FAR.

    The spatio-temporal FAR is :func:`spatiotemporal_far` of the temporal one
    and ``overlap``.

    Examples
    --------
    >>> j = joint_far((-1.0, 5.0), 1e-8, None, rate_b_hz=GRB_RATE_HZ, overlap=20.0)
    >>> f"{j.temporal:.4g} {j.spatiotemporal:.4g}"
    '5.898e-13 2.949e-14'
    """
    temporal: float | None = None
    if targeted is not None and far_a_hz is not None and far_b_hz is not None:
        temporal = targeted_temporal_far(window_s, far_a_hz, far_b_hz, targeted[0], targeted[1])
    elif far_a_hz is not None and rate_b_hz is not None:
        temporal = temporal_far(window_s, far_a_hz, rate_b_hz)
    elif far_b_hz is not None and rate_a_hz is not None:
        temporal = temporal_far(window_s, far_b_hz, rate_a_hz)
    if temporal is None:
        return JointFar(None, None)
    return JointFar(temporal, spatiotemporal_far(temporal, overlap))

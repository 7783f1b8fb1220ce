# SPDX-License-Identifier: Apache-2.0
"""Validation and unit helpers shared by the wire-format parsers."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Any

from broker.errors import RejectedNotice
from broker.model import Messenger, Provenance, SourceFormat

SECONDS_PER_YEAR = 365.25 * 86400.0
"""Julian year, s: the year of 'per year' false-alarm rates."""

_ISO_RE = re.compile(
    r"^\s*(\d{1,4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d+))?)?"
    r"\s*(Z|UTC|[+-]\d{2}:?\d{2})?\s*$"
)


def parse_time(value: Any, field: str) -> datetime:
    """Parse an upstream ISO-8601 time to an aware UTC datetime.

    Accepts a ``T`` or space separator, missing zero padding (GCN Classic
    translations write ``2008-8-25``), any number of fractional digits
    (truncated to microseconds), and ``Z``/``UTC``/offset suffixes; naive
    times are UTC, as every GCN and IGWN notice states.

    Raises
    ------
    RejectedNotice
        ``invalid_time`` when the value is not such a time.
    """
    if not isinstance(value, str):
        raise RejectedNotice("invalid_time", f"{field} is not a time string: {value!r}")
    m = _ISO_RE.match(value)
    if m is None:
        raise RejectedNotice("invalid_time", f"{field} is not an ISO-8601 time: {value!r}")
    year, month, day, hour, minute, sec, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        t = datetime(int(year), int(month), int(day), int(hour), int(minute), int(sec or 0), micro, tzinfo=UTC)
    except ValueError as exc:
        raise RejectedNotice("invalid_time", f"{field} is not a valid date/time: {value!r}") from exc
    if tz and tz not in ("Z", "UTC"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        t = datetime.fromtimestamp(t.timestamp() - offset, tz=UTC)
    return t


def as_float(value: Any, field: str) -> float:
    """Convert ``value`` to float; bool and non-numbers are rejected."""
    if isinstance(value, bool):
        raise RejectedNotice("invalid_value", f"{field} is a boolean, expected a number")
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise RejectedNotice("invalid_value", f"{field} is not a number: {value!r}") from exc
    return out


def as_text(value: Any, field: str) -> str:
    """``value`` if it is a string, else ``invalid_value``."""
    if not isinstance(value, str):
        raise RejectedNotice("invalid_value", f"{field} is not a string: {value!r}")
    return value


def as_bool(value: Any, field: str) -> bool:
    """``value`` if it is a JSON boolean, else ``invalid_value``."""
    if not isinstance(value, bool):
        raise RejectedNotice("invalid_value", f"{field} is not a boolean: {value!r}")
    return value


def finite_float(value: Any, field: str) -> float:
    """Convert ``value`` to a finite float, else ``invalid_value``."""
    out = as_float(value, field)
    if not math.isfinite(out):
        raise RejectedNotice("invalid_value", f"{field} is not finite: {value!r}")
    return out


def check_position(ra: Any, dec: Any, where: str = "") -> tuple[float, float]:
    """Validate an ICRS position in deg and return it with RA in [0, 360).

    Raises
    ------
    RejectedNotice
        ``invalid_coordinates`` if RA or Dec is missing, NaN, infinite, or out
        of range (RA outside [0, 360], Dec outside [-90, 90]).
    """
    label = f"{where} " if where else ""
    try:
        r, d = float(ra), float(dec)
    except (TypeError, ValueError) as exc:
        raise RejectedNotice("invalid_coordinates", f"{label}RA/Dec not numbers: {ra!r}, {dec!r}") from exc
    if not (math.isfinite(r) and math.isfinite(d)):
        raise RejectedNotice("invalid_coordinates", f"{label}RA/Dec not finite: {ra!r}, {dec!r}")
    if not (0.0 <= r <= 360.0):
        raise RejectedNotice("invalid_coordinates", f"{label}RA {r} deg outside [0, 360]")
    if not (-90.0 <= d <= 90.0):
        raise RejectedNotice("invalid_coordinates", f"{label}Dec {d} deg outside [-90, 90]")
    return (0.0 if r == 360.0 else r), d


def check_radius(value: Any, field: str) -> float:
    """Validate an error radius or axis in deg: finite, > 0 and <= 180.

    Raises
    ------
    RejectedNotice
        ``invalid_error_region`` otherwise.
    """
    try:
        r = float(value)
    except (TypeError, ValueError) as exc:
        raise RejectedNotice("invalid_error_region", f"{field} is not a number: {value!r}") from exc
    if not math.isfinite(r) or r <= 0.0 or r > 180.0:
        raise RejectedNotice("invalid_error_region", f"{field} = {value!r} deg is not in (0, 180]")
    return r


def check_probability(value: Any, field: str) -> float:
    """Validate a probability in [0, 1]; percentages (1, 100] are divided by 100."""
    p = as_float(value, field)
    if math.isfinite(p) and 1.0 < p <= 100.0:
        p /= 100.0
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise RejectedNotice("invalid_value", f"{field} = {value!r} is not a probability")
    return p


def per_year_to_hz(rate_per_year: float) -> float:
    """Convert a rate in yr^-1 (Julian year) to Hz."""
    return rate_per_year / SECONDS_PER_YEAR


def per_day_to_hz(rate_per_day: float) -> float:
    """Convert a rate in day^-1 to Hz."""
    return rate_per_day / 86400.0


def provenance(fmt: SourceFormat, parser: str, raw: bytes, upstream_ref: str | None) -> Provenance:
    """Build the provenance block for a parsed payload."""
    from broker import __version__

    return Provenance(
        source_format=fmt,
        parser_version=f"{parser}/{__version__}",
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        raw_size=len(raw),
        upstream_ref=upstream_ref,
    )


_MESSENGER_BY_MISSION: dict[str, Messenger] = {
    "icecube": "neutrino",
    "km3net": "neutrino",
    "super-kamiokande": "neutrino",
    "superk": "neutrino",
    "snews": "neutrino",
    "amon": "neutrino",
    "lvk": "gw",
    "lvc": "gw",
    "ligo": "gw",
    "igwn": "gw",
    "fermi": "gamma",
    "integral": "gamma",
    "agile": "gamma",
    "burstcube": "gamma",
    "glowbug": "gamma",
    "calet": "gamma",
    "suzaku": "gamma",
    "hete": "gamma",
    "konus": "gamma",
    "gecam": "gamma",
    "milagro": "gamma",
    "hawc": "gamma",
    "near": "gamma",
    "svom": "gamma",
    "einstein probe": "xray",
    "einstein_probe": "xray",
    "ep": "xray",
    "maxi": "xray",
    "rxte": "xray",
    "bepposax": "xray",
    "alexis": "xray",
    "chime": "radio",
    "dsa110": "radio",
    "dsa-110": "radio",
    "moa": "optical",
    "boom": "optical",
    "ztf": "optical",
}

_MESSENGER_BY_INSTRUMENT: dict[str, Messenger] = {
    "xrt": "xray",
    "uvot": "optical",
    "bat": "gamma",
    "bat-guano": "gamma",
    "wxt": "xray",
    "fxt": "xray",
    "vt": "optical",
    "mxt": "xray",
    "wfc": "xray",
    "asm": "xray",
}


def messenger_for(mission: str, instrument: str | None = None) -> Messenger:
    """Messenger / band of a mission, refined by the instrument when it decides.

    Swift XRT is ``xray`` and UVOT ``optical`` while BAT is ``gamma``; the
    Einstein Probe and MAXI are ``xray``; SVOM ECLAIRs/GRM ``gamma``.
    """
    if instrument:
        by_inst = _MESSENGER_BY_INSTRUMENT.get(instrument.strip().lower())
        if by_inst is not None:
            return by_inst
    return _MESSENGER_BY_MISSION.get(mission.strip().lower(), "unknown")

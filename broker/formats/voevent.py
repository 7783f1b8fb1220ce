# SPDX-License-Identifier: Apache-2.0
"""GCN Classic VOEvent 2.0 (and 1.1) XML notices, including the LVC/LVK VOEvents.

Entry point: :func:`from_voevent_bytes`.  The XML is parsed with a hardened
:mod:`lxml` parser (no entity resolution, no network, no huge trees, comments
dropped); elements are matched by local name, so namespaced (``voe:VOEvent``),
default-namespaced and bare ``<VOEvent>`` roots are all read, as is the STC
default namespace some GCN VOEvents put on ``ObsDataLocation``.

Identification
--------------
* ``notice_type`` is the GCN packet type name of ``Param Packet_Type``
  (pygcn's table, e.g. 111 -> ``FERMI_GBM_FLT_POS``).  A notice with no known
  packet type (LVK-internal gwcelery VOEvents, ``ivo://lvk.internal/...``) gets
  its IVORN stream and tag instead, e.g. ``lvk.internal/fermi#targeted_subthreshold``.
* ``mission``/``instrument`` come from the packet type (``FERMI_GBM_*`` ->
  Fermi/GBM, ``SWIFT_XRT_*`` -> Swift/XRT, ``ICECUBE_*`` -> IceCube, ``LVC_*`` ->
  LVK, ...), else from the IVORN stream (``#`` prefix: ``Fermi``, ``SWIFT``,
  ``lvk.internal/einsteinprobe``, ...); a ``Param Instrument`` (SVOM) wins.
  For LVK the instrument is the detector list ``Instruments`` (``H1,L1,V1``),
  as in the IGWN JSON/Avro parser.
  ``messenger`` is :func:`~broker.formats.common.messenger_for` of both.
* ``event_id``: ``GraceID`` (LVK); ``run_id`` + ``_`` + ``event_id`` (AMON);
  ``TrigID``; ``Trans_Num`` (GBM sub-threshold); ``Burst_Id`` (SVOM).  An
  all-zero ``TrigID`` is GCN's "no trigger number" placeholder (AGILE MCAL,
  INTEGRAL test notices): the event time (ISO, UTC) is used instead, because a
  literal ``"0"`` would merge unrelated events.  No id at all -> ``missing_field``.
* ``revision``: AMON ``Rev``; else ``Pkt_Ser_Num`` (for LVK it equals the N of
  ``...#S190425z-N-Type``, which is used when ``Pkt_Ser_Num`` is absent).

Kind
----
In order: ``retraction`` when ``AlertType`` is Retraction, a ``Retraction``
flag (AMON/SNEWS ``Trigger_ID`` group, O2 LVC) is true, the packet type is
``LVC_RETRACTION`` or the notice cites an IVORN with ``cite="retraction"``;
then LVK ``AlertType`` (EarlyWarning -> ``early_warning``, Preliminary,
Initial, Update); then AMON ``Rev`` (0 -> ``initial``, >0 -> ``update``); then
the packet type's own kind (below); then ``update`` if the notice cites an
earlier VOEvent (``followup``/``supersedes``); else ``initial``.

=====================================================  ===============
packet types                                            kind
=====================================================  ===============
SWIFT_BAT_QL_POS (97): quick-look, superseded by 61     ``preliminary``
FERMI_GBM_FLT/GND/FIN_POS (111/112/115), LAT_POS_UPD,   ``update``
INTEGRAL_REFINED/OFFLINE, AGILE_GRB_GROUND/REFINED,
Swift BAT_GRB_LC, FOM_OBS, SC_SLEW, XRT_* and UVOT_*
products (they all follow the trigger's first packet)
everything else (GBM_ALERT, BAT_GRB_POS_ACK, WAKEUP...)  ``initial``
=====================================================  ===============

Test flag
---------
``is_test`` is true for VOEvent ``role`` ``test`` or ``utility``; any true
``Test_Submission``/``Test_Notice``/``Test``/``InternalTest`` flag (Fermi,
Swift, INTEGRAL incl. the MDC replay, AMON, SNEWS); ``HardwareInj=1`` (LVK);
GCN test packet types (``*_POS_TEST``, ``LVC_TEST``, ``MAXI_TEST``, ...); LVK
mock/test ids (``M...``/``T...``: ``MS181101ab``, ``TS...``).

Regions
-------
``Position2D`` ``C1``/``C2``/``Error2Radius`` (deg).  Non-finite or
out-of-range RA/Dec -> ``invalid_coordinates``; a negative, NaN or > 180 deg
radius -> ``invalid_error_region``.  No position is reported (region ``None``)
when the packet type carries none (GBM_ALERT, BAT_GRB_ALERT, AGILE_MCAL_ALERT
fill 0/0 or junk), when ``RADec_valid`` is false (SNEWS writes 0/0 and a 360
deg radius), for a retraction at 0/0, and for 0/0 with a zero radius.  A zero
radius at a real position (Swift FOM_OBS, BAT lightcurve) gives a
:class:`~broker.model.Point`.  AMON sets ``RADec_valid=false`` on every
IceCube Gold/Bronze/Cascade notice, including those with a valid position, so
the flag is ignored for those packet types.

=================================  ===========  ==========  ===============================================
packet types                        containment  systematic  source / note
=================================  ===========  ==========  ===============================================
FERMI_GBM_FLT_POS (111)             0.68         yes         fermi.html: 1-sigma; notices: "stat+sys"
FERMI_GBM_GND_POS, FIN_POS          0.68         no          1-sigma, "statistical only" (systematic
(112, 115)                                                   added by users, Connaughton et al. 2015)
FERMI_GBM_SUBTHRESH (131)           None         None        not stated by GCN
SWIFT BAT (61, 84, 97, 98)          0.90         yes         swift.html: 90 %, incl. systematic
SWIFT_XRT_POSITION (67)             0.90         None        XRT team: 90 % confidence radius
SWIFT_UVOT_POS (81)                 0.90         None        90 % containment
INTEGRAL (53-56)                    0.90         None        IBAS 90 % error circle
ICECUBE_ASTROTRACK_GOLD/BRONZE,     0.90         yes         ``src_error_90``; ``src_error_50`` goes to
ICECUBE_CASCADE (173/174/176)                                ``other_radii`` at 0.5
everything else (LVK-internal       None         None        containment not stated
templates, SVOM, AGILE, ...)
LVC_* (150-164)                     --           --          no position; ``skymap_url`` instead
=================================  ===========  ==========  ===============================================

Units
-----
``FAR`` follows its ``unit`` attribute (``Hz``; ``yr^-1`` -> Julian year;
``day^-1``); with no unit, LVK means Hz and AMON yr^-1, anything else is
rejected.  ``energy`` follows its unit (AMON gives GeV in early notices, TeV
later) and is stored as ``energy_tev``.  Durations are stored in s.

Sky maps are never fetched: ``skymap_url`` is LVK ``GW_SKYMAP``'s
``skymap_fits`` (else ``skymap_fits_basic``, else the first ``skymap_fits*``),
IceCube's ``skymap_fits`` or GBM sub-threshold ``HealPix_URL`` (GBM
``LocationMap_URL`` plots and FITS images stay in ``location_map_url``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from lxml import etree

from broker.errors import RejectedNotice
from broker.formats.common import (
    as_float,
    check_position,
    check_probability,
    check_radius,
    messenger_for,
    parse_time,
    per_day_to_hz,
    per_year_to_hz,
    provenance,
)
from broker.model import (
    Alert,
    AlertKind,
    Circle,
    ContainmentRadius,
    Point,
    PropertyValue,
    Region,
    RelatedEvent,
)

__all__ = ["from_voevent_bytes"]

_PARSER_NAME = "voevent"
_VOEVENT_NS_PREFIX = "http://www.ivoa.net/xml/VOEvent"

# --------------------------------------------------------------------------
# GCN packet types (pygcn gcn/notice_types.py, from gcn.gsfc.nasa.gov/filtering.html)
# --------------------------------------------------------------------------

_PACKET_NAMES: dict[int, str] = {
    1: "GRB_COORDS", 2: "TEST_COORDS", 3: "IM_ALIVE", 4: "KILL_SOCKET", 11: "MAXBC",
    21: "BRAD_COORDS", 22: "GRB_FINAL", 24: "HUNTS_SRC", 25: "ALEXIS_SRC",
    26: "XTE_PCA_ALERT", 27: "XTE_PCA_SRC", 28: "XTE_ASM_ALERT", 29: "XTE_ASM_SRC",
    30: "COMPTEL_SRC", 31: "IPN_RAW", 32: "IPN_SEG", 33: "SAX_WFC_ALERT", 34: "SAX_WFC_SRC",
    35: "SAX_NFI_ALERT", 36: "SAX_NFI_SRC", 37: "XTE_ASM_TRANS", 39: "IPN_POS",
    40: "HETE_ALERT_SRC", 41: "HETE_UPDATE_SRC", 42: "HETE_FINAL_SRC", 43: "HETE_GNDANA_SRC",
    44: "HETE_TEST", 45: "GRB_CNTRPART", 46: "SWIFT_TOO_FOM", 47: "SWIFT_TOO_SC_SLEW",
    48: "DOW_TOD", 51: "INTEGRAL_POINTDIR", 52: "INTEGRAL_SPIACS", 53: "INTEGRAL_WAKEUP",
    54: "INTEGRAL_REFINED", 55: "INTEGRAL_OFFLINE", 56: "INTEGRAL_WEAK", 57: "AAVSO",
    58: "MILAGRO_POS", 59: "KONUS_LC", 60: "SWIFT_BAT_GRB_ALERT", 61: "SWIFT_BAT_GRB_POS_ACK",
    62: "SWIFT_BAT_GRB_POS_NACK", 63: "SWIFT_BAT_GRB_LC", 64: "SWIFT_BAT_SCALEDMAP",
    65: "SWIFT_FOM_OBS", 66: "SWIFT_SC_SLEW", 67: "SWIFT_XRT_POSITION", 68: "SWIFT_XRT_SPECTRUM",
    69: "SWIFT_XRT_IMAGE", 70: "SWIFT_XRT_LC", 71: "SWIFT_XRT_CENTROID", 72: "SWIFT_UVOT_DBURST",
    73: "SWIFT_UVOT_FCHART", 76: "SWIFT_BAT_GRB_LC_PROC", 77: "SWIFT_XRT_SPECTRUM_PROC",
    78: "SWIFT_XRT_IMAGE_PROC", 79: "SWIFT_UVOT_DBURST_PROC", 80: "SWIFT_UVOT_FCHART_PROC",
    81: "SWIFT_UVOT_POS", 82: "SWIFT_BAT_GRB_POS_TEST", 83: "SWIFT_POINTDIR", 84: "SWIFT_BAT_TRANS",
    85: "SWIFT_XRT_THRESHPIX", 86: "SWIFT_XRT_THRESHPIX_PROC", 87: "SWIFT_XRT_SPER",
    88: "SWIFT_XRT_SPER_PROC", 89: "SWIFT_UVOT_POS_NACK", 90: "SWIFT_BAT_ALARM_SHORT",
    91: "SWIFT_BAT_ALARM_LONG", 92: "SWIFT_UVOT_EMERGENCY", 93: "SWIFT_XRT_EMERGENCY",
    94: "SWIFT_FOM_PPT_ARG_ERR", 95: "SWIFT_FOM_SAFE_POINT", 96: "SWIFT_FOM_SLEW_ABORT",
    97: "SWIFT_BAT_QL_POS", 98: "SWIFT_BAT_SUB_THRESHOLD", 99: "SWIFT_BAT_SLEW_POS",
    100: "AGILE_GRB_WAKEUP", 101: "AGILE_GRB_GROUND", 102: "AGILE_GRB_REFINED",
    103: "SWIFT_ACTUAL_POINTDIR", 105: "AGILE_MCAL_ALERT", 107: "AGILE_POINTDIR", 108: "AGILE_TRANS",
    109: "AGILE_GRB_POS_TEST", 110: "FERMI_GBM_ALERT", 111: "FERMI_GBM_FLT_POS",
    112: "FERMI_GBM_GND_POS", 113: "FERMI_GBM_LC", 114: "FERMI_GBM_GND_INTERNAL",
    115: "FERMI_GBM_FIN_POS", 116: "FERMI_GBM_ALERT_INTERNAL", 117: "FERMI_GBM_FLT_INTERNAL",
    118: "FERMI_GBM_TRANS", 119: "FERMI_GBM_POS_TEST", 120: "FERMI_LAT_POS_INI",
    121: "FERMI_LAT_POS_UPD", 122: "FERMI_LAT_POS_DIAG", 123: "FERMI_LAT_TRANS",
    124: "FERMI_LAT_POS_TEST", 125: "FERMI_LAT_MONITOR", 126: "FERMI_SC_SLEW", 127: "FERMI_LAT_GND",
    128: "FERMI_LAT_OFFLINE", 129: "FERMI_POINTDIR", 130: "SIMBADNED", 131: "FERMI_GBM_SUBTHRESH",
    133: "SWIFT_BAT_MONITOR", 134: "MAXI_UNKNOWN", 135: "MAXI_KNOWN", 136: "MAXI_TEST", 137: "OGLE",
    138: "CBAT", 139: "MOA", 140: "SWIFT_BAT_SUBSUB", 141: "SWIFT_BAT_KNOWN_SRC",
    142: "VOE_11_IM_ALIVE", 143: "VOE_20_IM_ALIVE", 144: "FERMI_SC_SLEW_INTERNAL", 145: "COINCIDENCE",
    146: "FERMI_GBM_FIN_INTERNAL", 148: "SUZAKU_LC", 149: "SNEWS", 150: "LVC_PRELIMINARY",
    151: "LVC_INITIAL", 152: "LVC_UPDATE", 153: "LVC_TEST", 154: "LVC_COUNTERPART",
    157: "AMON_ICECUBE_COINC", 158: "AMON_ICECUBE_HESE", 160: "CALET_GBM_FLT_LC",
    161: "CALET_GBM_GND_LC", 163: "LVC_EARLY_WARNING", 164: "LVC_RETRACTION", 168: "GWHEN_COINC",
    169: "AMON_ICECUBE_EHE", 171: "HAWC_BURST_MONITOR", 172: "AMON_NU_EM_COINC",
    173: "ICECUBE_ASTROTRACK_GOLD", 174: "ICECUBE_ASTROTRACK_BRONZE", 175: "SK_SN",
    176: "ICECUBE_CASCADE", 188: "GECAM_FLT", 189: "GECAM_GND",
}

# Name prefix -> (mission, instrument); the longest matching prefix wins.
_PREFIX_MISSION: dict[str, tuple[str, str | None]] = {
    "FERMI_GBM_": ("Fermi", "GBM"),
    "FERMI_LAT_": ("Fermi", "LAT"),
    "FERMI_": ("Fermi", None),
    "SWIFT_BAT_": ("Swift", "BAT"),
    "SWIFT_XRT_": ("Swift", "XRT"),
    "SWIFT_UVOT_": ("Swift", "UVOT"),
    "SWIFT_FOM_OBS": ("Swift", "BAT"),
    "SWIFT_": ("Swift", None),
    "INTEGRAL_SPIACS": ("INTEGRAL", "SPI-ACS"),
    "INTEGRAL_": ("INTEGRAL", None),
    "AGILE_MCAL_": ("AGILE", "MCAL"),
    "AGILE_": ("AGILE", None),
    "ICECUBE_": ("IceCube", None),
    "AMON_ICECUBE_": ("IceCube", None),
    "AMON_": ("AMON", None),
    "GWHEN_": ("AMON", None),
    "LVC_": ("LVK", None),
    "SNEWS": ("SNEWS", None),
    "SK_SN": ("Super-Kamiokande", None),
    "MAXI_": ("MAXI", None),
    "GECAM_": ("GECAM", None),
    "HAWC_": ("HAWC", None),
    "CALET_": ("CALET", "CGBM"),
    "HETE_": ("HETE", None),
    "XTE_PCA_": ("RXTE", "PCA"),
    "XTE_ASM_": ("RXTE", "ASM"),
    "SAX_WFC_": ("BeppoSAX", "WFC"),
    "SAX_NFI_": ("BeppoSAX", "NFI"),
    "IPN_": ("IPN", None),
    "KONUS_": ("Konus", None),
    "MILAGRO_": ("Milagro", None),
    "SUZAKU_": ("Suzaku", None),
    "MOA": ("MOA", None),
    "OGLE": ("OGLE", None),
}

# IVORN stream (the part after the last "/" and before "#", lower case) -> (mission, instrument).
_STREAM_MISSION: dict[str, tuple[str, str | None]] = {
    "fermi": ("Fermi", "GBM"),
    "swift": ("Swift", "BAT"),
    "integral": ("INTEGRAL", None),
    "agile": ("AGILE", None),
    "amon": ("AMON", None),
    "snews": ("SNEWS", None),
    "lvc": ("LVK", None),
    "gcn_sender": ("LVK", None),
    "einsteinprobe": ("Einstein Probe", "WXT"),
    "svom": ("SVOM", None),
    "maxi": ("MAXI", None),
    "gecam": ("GECAM", None),
}

_NOT_NOTICES = {3: "an IM_ALIVE heartbeat", 4: "a KILL_SOCKET command", 142: "an IM_ALIVE heartbeat",
                143: "an IM_ALIVE heartbeat", 51: "a pointing direction", 83: "a pointing direction",
                103: "a pointing direction", 107: "a pointing direction", 129: "a pointing direction"}
_TEST_PACKETS = frozenset({2, 44, 82, 109, 119, 124, 136, 153})
_NO_POSITION_PACKETS = frozenset({60, 105, 110, 150, 151, 152, 153, 154, 163, 164})
_RADEC_VALID_UNRELIABLE = frozenset({173, 174, 176})
_UPDATE_PACKETS = frozenset({
    111, 112, 115, 121, 54, 55, 101, 102, 63, 65, 66, 76,
    67, 68, 69, 70, 71, 72, 73, 77, 78, 79, 80, 81, 85, 86, 87, 88, 89,
})
_PACKET_KIND: dict[int, AlertKind] = {
    97: "preliminary",
    150: "preliminary", 151: "initial", 152: "update", 163: "early_warning", 164: "retraction",
}
# Packet type -> (containment, systematic_included) of Error2Radius; see the module table.
_CONTAINMENT: dict[int, tuple[float, bool | None]] = {
    111: (0.68, True), 112: (0.68, False), 115: (0.68, False),
    61: (0.90, True), 84: (0.90, True), 97: (0.90, True), 98: (0.90, True),
    67: (0.90, None), 81: (0.90, None),
    53: (0.90, None), 54: (0.90, None), 55: (0.90, None), 56: (0.90, None),
    173: (0.90, True), 174: (0.90, True), 176: (0.90, True),
}

_ALERT_TYPES: dict[str, AlertKind] = {
    "earlywarning": "early_warning",
    "preliminary": "preliminary",
    "initial": "initial",
    "update": "update",
    "retraction": "retraction",
}

# GBM on-board source classes (GCN socket packet definition, Most_Likely_Index).
_GBM_CLASSES: dict[int, str] = {
    0: "ERROR", 1: "UNRELIABLE_LOCATION", 2: "LOCAL_PARTICLES", 3: "BELOW_HORIZON", 4: "GRB",
    5: "GENERIC_SGR", 6: "GENERIC_TRANSIENT", 7: "DISTANT_PARTICLES", 8: "SOLAR_FLARE",
    9: "CYG_X1", 10: "SGR_1806_20", 11: "GROJ_0422_32", 19: "TGF",
}

_TEST_FLAGS = ("Test_Submission", "Test_Notice", "Test", "InternalTest")
_LVK_IVORN_RE = re.compile(r"#(?P<id>[A-Za-z0-9]+)-(?P<n>\d+)-(?P<type>[A-Za-z]+)$")
_IVORN_TAG_RE = re.compile(r"^(?P<tag>.*?)[-_]?(?:\d{4}-\d{1,2}-\d{1,2}T|_\d{3,}[-_]|$)")

_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})

_ENERGY_TO_TEV = {"ev": 1e-12, "kev": 1e-9, "mev": 1e-6, "gev": 1e-3, "tev": 1.0, "pev": 1e3}
_SECONDS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3}


# --------------------------------------------------------------------------
# XML helpers (local-name matching, so any namespace or none)
# --------------------------------------------------------------------------


def _local(el: etree._Element) -> str | None:
    tag = el.tag
    if not isinstance(tag, str):  # processing instruction, entity reference
        return None
    return tag.rpartition("}")[2]


def _children(el: etree._Element, name: str) -> Iterator[etree._Element]:
    # "{*}name" matches the local name in any namespace or none (done in C by lxml).
    return el.iterchildren("{*}" + name)


def _child(el: etree._Element | None, name: str) -> etree._Element | None:
    if el is None:
        return None
    return next(_children(el, name), None)


def _first_descendant(el: etree._Element | None, name: str) -> etree._Element | None:
    if el is None:
        return None
    return next(el.iterdescendants("{*}" + name), None)


def _text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


_PARSERS = threading.local()


def _xml_parser() -> etree.XMLParser:
    """The hardened parser, one per thread (lxml parsers are not thread-safe)."""
    parser: etree.XMLParser | None = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
        _PARSERS.parser = parser
    return parser


def _parse_xml(raw: bytes) -> etree._Element:
    parser = _xml_parser()
    try:
        root = etree.fromstring(raw, parser)  # hardened parser above
    except etree.XMLSyntaxError as exc:
        raise RejectedNotice("malformed_xml", f"not well-formed XML: {exc}") from exc
    except ValueError as exc:
        raise RejectedNotice("malformed_xml", f"unreadable XML: {exc}") from exc
    if root is None:
        raise RejectedNotice("malformed_xml", "XML document has no root element")
    ns = etree.QName(root.tag).namespace if isinstance(root.tag, str) else None
    if _local(root) != "VOEvent" or (ns is not None and not ns.startswith(_VOEVENT_NS_PREFIX)):
        raise RejectedNotice("unknown_format", f"XML root is <{root.tag}>, not a VOEvent")
    return root


# --------------------------------------------------------------------------
# The <What> section
# --------------------------------------------------------------------------


class _Param(NamedTuple):
    """One ``<Param>``: its value, unit and the group it sits in (``""`` at top level)."""

    name: str
    value: str | None
    unit: str | None
    group: str


class _What:
    """Index of the ``Param`` elements of ``<What>``, top level first."""

    def __init__(self, what: etree._Element | None) -> None:
        self.params: list[_Param] = []
        self.top: list[_Param] = []
        self.groups: dict[str, list[_Param]] = {}
        self._first: dict[str, _Param] = {}
        if what is None:
            return
        for el in what.iterchildren("{*}Param", "{*}Group"):
            name = _local(el)
            if name == "Param":
                param = self._param(el, "")
                self.top.append(param)
                self.params.append(param)
            elif name == "Group":
                keys = {k for k in (el.get("name"), el.get("type")) if k}
                members = [self._param(p, el.get("name") or el.get("type") or "") for p in _children(el, "Param")]
                for key in keys:
                    self.groups.setdefault(key.lower(), []).extend(members)
                self.params.extend(members)
        # First non-empty Param of each name, top level before groups.
        for p in (*self.top, *self.params):
            if p.value not in (None, "") and p.name not in self._first:
                self._first[p.name] = p

    @staticmethod
    def _param(el: etree._Element, group: str) -> _Param:
        value = el.get("value")
        unit = el.get("unit")
        return _Param(
            el.get("name") or "",
            value.strip() if value is not None else None,
            (unit.strip() or None) if unit else None,
            group,
        )

    def get(self, name: str) -> _Param | None:
        """The first ``Param`` called ``name`` (top level before groups)."""
        return self._first.get(name)

    def value(self, name: str) -> str | None:
        p = self.get(name)
        return None if p is None else p.value

    def group(self, *keys: str) -> dict[str, _Param] | None:
        for key in keys:
            members = self.groups.get(key.lower())
            if members is not None:
                return {p.name: p for p in members if p.value not in (None, "")}
        return None

    def flag(self, name: str) -> bool | None:
        """A boolean ``Param`` anywhere in ``<What>`` (``true``/``false``/``1``/``0``)."""
        found = [_as_bool(p.value) for p in self.params if p.name == name]
        if any(found):
            return True
        return False if found and all(f is False for f in found) else None


def _as_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _as_int(value: str, field: str) -> int:
    try:
        return int(value.strip())
    except ValueError as exc:
        raise RejectedNotice("invalid_value", f"{field} is not an integer: {value!r}") from exc


# --------------------------------------------------------------------------
# Identification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ident:
    """Who issued the notice: packet type, mission, instrument, notice type."""

    packet: int | None
    notice_type: str
    mission: str
    instrument: str | None


def _split_ivorn(ivorn: str) -> tuple[str, str]:
    """``ivo://auth/stream#fragment`` -> (``auth/stream``, ``fragment``)."""
    body = ivorn.removeprefix("ivo://")
    stream, _, fragment = body.partition("#")
    return stream, fragment


def _ivorn_tag(fragment: str) -> str:
    """The notice-type part of an IVORN fragment (drops times, trigger numbers, serials)."""
    m = _IVORN_TAG_RE.match(fragment)
    tag = m.group("tag") if m else fragment
    return tag.rstrip("-_") or fragment


def _mission_for_packet(name: str) -> tuple[str, str | None] | None:
    best = max((p for p in _PREFIX_MISSION if name.startswith(p)), key=len, default=None)
    return None if best is None else _PREFIX_MISSION[best]


def _identify(what: _What, ivorn: str) -> _Ident:
    packet: int | None = None
    raw_packet = what.value("Packet_Type")
    if raw_packet is not None:
        packet = _as_int(raw_packet, "Packet_Type")
    if packet in _NOT_NOTICES:
        raise RejectedNotice("not_a_notice", f"GCN packet type {packet} is {_NOT_NOTICES[packet]}, not an event")
    stream, fragment = _split_ivorn(ivorn)
    stream_key = stream.rsplit("/", 1)[-1].lower()
    by_stream = _STREAM_MISSION.get(stream_key, (stream.rsplit("/", 1)[-1] or "unknown", None))
    name = _PACKET_NAMES.get(packet) if packet is not None else None
    by_packet = _mission_for_packet(name) if name else None
    if name is None:
        packet = None  # unknown number (e.g. SVOM's 576): not a GCN Classic type
        notice_type = f"{stream}#{_ivorn_tag(fragment)}"
    else:
        notice_type = name
    mission, instrument = by_packet or by_stream
    inst_param = what.value("Instrument")
    if inst_param is None and mission == "LVK":
        inst_param = what.value("Instruments")  # detector list, as the IGWN JSON parser does
    if inst_param is not None:
        instrument = inst_param
    return _Ident(packet, notice_type, mission, instrument)


def _is_placeholder_id(value: str) -> bool:
    return value.strip("0") == ""


def _event_ids(what: _What, event_time: datetime) -> tuple[str, tuple[str, ...]]:
    """The event id and every identifier the notice states."""
    ids: list[str] = []
    grace = what.value("GraceID")
    run, evt = what.value("run_id"), what.value("event_id")
    run_event = f"{run}_{evt}" if run is not None and evt is not None else None
    trig = what.value("TrigID")
    if trig is not None and _is_placeholder_id(trig):
        trig = None
    candidates = [grace, run_event, trig, what.value("Trans_Num"), what.value("Burst_Id")]
    for extra in ("event_name", "AMON_ID", "Swift_Trig_Id"):
        v = what.value(extra)
        if v is not None:
            ids.append(v)
    ids.extend(c for c in candidates if c is not None and c not in ids)
    chosen = next((c for c in candidates if c is not None), None)
    if chosen is None:
        if what.value("TrigID") is not None:
            chosen = event_time.isoformat().replace("+00:00", "Z")
        else:
            raise RejectedNotice("missing_field", "no event identifier (TrigID, GraceID, run_id/event_id, Trans_Num)")
    return chosen, tuple(ids)


def _revision(what: _What, ivorn: str) -> int | None:
    rev = what.value("Rev")
    if rev is not None and what.value("AMON_ID") is not None:
        return _as_int(rev, "Rev")
    ser = what.value("Pkt_Ser_Num")
    if ser is not None:
        return _as_int(ser, "Pkt_Ser_Num")
    m = _LVK_IVORN_RE.search(ivorn)
    return int(m.group("n")) if m else None


# --------------------------------------------------------------------------
# Kind and test flag
# --------------------------------------------------------------------------


def _citations(root: etree._Element) -> list[tuple[str, str]]:
    cit = _child(root, "Citations")
    if cit is None:
        return []
    return [((e.get("cite") or "").strip().lower(), _text(e) or "") for e in _children(cit, "EventIVORN")]


def _kind(what: _What, ident: _Ident, cites: list[tuple[str, str]]) -> AlertKind:
    alert_type = what.value("AlertType")
    if (
        (alert_type or "").lower() == "retraction"
        or what.flag("Retraction")
        or ident.packet == 164
        or any(c == "retraction" for c, _ in cites)
    ):
        return "retraction"
    if alert_type is not None:
        kind = _ALERT_TYPES.get(alert_type.replace(" ", "").replace("_", "").lower())
        if kind is None:
            raise RejectedNotice("invalid_value", f"unknown LVK AlertType {alert_type!r}")
        return kind
    rev = what.value("Rev")
    if rev is not None and what.value("AMON_ID") is not None:
        return "initial" if _as_int(rev, "Rev") == 0 else "update"
    if ident.packet is not None and ident.packet in _PACKET_KIND:
        return _PACKET_KIND[ident.packet]
    if ident.packet in _UPDATE_PACKETS:
        return "update"
    if any(c in ("followup", "supersedes") for c, _ in cites):
        return "update"
    return "initial"


def _is_test(root: etree._Element, what: _What, ident: _Ident) -> bool:
    if (root.get("role") or "").strip().lower() in ("test", "utility"):
        return True
    if any(what.flag(f) for f in _TEST_FLAGS):
        return True
    if _as_bool(what.value("HardwareInj")):
        return True
    if ident.packet in _TEST_PACKETS:
        return True
    grace = what.value("GraceID")
    return grace is not None and grace[:1] in ("M", "T")


# --------------------------------------------------------------------------
# WhereWhen
# --------------------------------------------------------------------------


def _event_time(root: etree._Element) -> datetime:
    iso = _text(_first_descendant(_child(root, "WhereWhen"), "ISOTime"))
    if iso is None:
        raise RejectedNotice("missing_field", "no WhereWhen ISOTime (event time)")
    return parse_time(iso, "WhereWhen ISOTime")


def _region(root: etree._Element, what: _What, ident: _Ident, kind: AlertKind) -> Region | None:
    pos = _first_descendant(_child(root, "WhereWhen"), "Position2D")
    if pos is None or (ident.packet is not None and ident.packet in _NO_POSITION_PACKETS):
        return None
    if what.flag("RADec_valid") is False and ident.packet not in _RADEC_VALID_UNRELIABLE:
        return None
    unit = (pos.get("unit") or "deg").strip().lower()
    if unit not in ("deg", "degree", "degrees"):
        raise RejectedNotice("invalid_coordinates", f"Position2D unit {unit!r} is not deg")
    value2 = _child(pos, "Value2")
    c1, c2 = _text(_child(value2, "C1")), _text(_child(value2, "C2"))
    if c1 is None or c2 is None:
        raise RejectedNotice("missing_field", "Position2D lacks Value2 C1/C2 (RA/Dec)")
    ra, dec = check_position(c1, c2, "WhereWhen Position2D")
    err = _text(_child(pos, "Error2Radius"))
    at_origin = ra == 0.0 and dec == 0.0
    if kind == "retraction" and at_origin:
        return None
    if err is None:
        return Point(ra, dec)
    try:
        r = float(err)
    except ValueError as exc:
        raise RejectedNotice("invalid_error_region", f"Error2Radius is not a number: {err!r}") from exc
    if r == 0.0:
        return None if at_origin else Point(ra, dec)
    radius = check_radius(r, "Error2Radius")
    containment, systematic = _CONTAINMENT.get(ident.packet or -1, (None, None))
    other: tuple[ContainmentRadius, ...] = ()
    err50 = what.get("src_error_50")
    if err50 is not None and err50.value is not None:
        other = (ContainmentRadius(0.5, check_radius(_angle_deg(err50), "src_error_50")),)
    return Circle(ra, dec, radius, containment=containment, systematic_included=systematic, other_radii=other)


def _angle_deg(p: _Param) -> float:
    unit = (p.unit or "deg").lower()
    factor = {"deg": 1.0, "arcmin": 1.0 / 60.0, "arcsec": 1.0 / 3600.0}.get(unit)
    if factor is None:
        raise RejectedNotice("invalid_error_region", f"{p.name} unit {p.unit!r} is not an angle unit")
    return as_float(p.value, p.name) * factor


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------


def _rate_hz(p: _Param, default_unit: str | None) -> float:
    """A false-alarm rate in Hz from a ``Param`` with its unit (``Hz``, ``yr^-1``, ``day^-1``)."""
    value = as_float(p.value, p.name)
    unit = (p.unit or default_unit or "").lower().replace(" ", "")
    if unit in ("hz", "s^-1", "1/s", "/s", "s-1"):
        out = value
    elif unit in ("yr^-1", "1/yr", "/yr", "yr-1", "peryear", "year^-1", "a^-1"):
        out = per_year_to_hz(value)
    elif unit in ("day^-1", "1/day", "/day", "d^-1", "day-1", "perday"):
        out = per_day_to_hz(value)
    else:
        raise RejectedNotice("invalid_value", f"{p.name} has no known rate unit (unit={p.unit!r})")
    if not math.isfinite(out) or out < 0:
        raise RejectedNotice("invalid_value", f"{p.name} = {p.value!r} is not a false-alarm rate")
    return out


def _energy_tev(p: _Param) -> float:
    factor = _ENERGY_TO_TEV.get((p.unit or "").lower())
    if factor is None:
        raise RejectedNotice("invalid_value", f"{p.name} has no known energy unit (unit={p.unit!r})")
    return as_float(p.value, p.name) * factor


def _seconds(p: _Param) -> float:
    factor = _SECONDS.get((p.unit or "s").lower())
    if factor is None:
        raise RejectedNotice("invalid_value", f"{p.name} has no known time unit (unit={p.unit!r})")
    return as_float(p.value, p.name) * factor


def _float(p: _Param) -> float:
    return as_float(p.value, p.name)


def _int(p: _Param) -> int:
    return _as_int(p.value or "", p.name)


def _str(p: _Param) -> str:
    return p.value or ""


def _bool(p: _Param) -> bool:
    b = _as_bool(p.value)
    if b is None:
        raise RejectedNotice("invalid_value", f"{p.name} is not a boolean: {p.value!r}")
    return b


def _prob(p: _Param) -> float:
    return check_probability(p.value, p.name)


def _percent(p: _Param) -> float:
    """A percentage (0-100) as a fraction."""
    v = as_float(p.value, p.name)
    if not (math.isfinite(v) and 0.0 <= v <= 100.0):
        raise RejectedNotice("invalid_value", f"{p.name} = {p.value!r} is not a percentage")
    return v / 100.0


# --------------------------------------------------------------------------
# Properties (table-driven: Param name -> property key and converter)
# --------------------------------------------------------------------------

_PROPERTY_PARAMS: dict[str, tuple[str, Callable[[_Param], PropertyValue]]] = {
    # neutrinos (AMON)
    "signalness": ("signalness", _prob),
    "energy": ("energy_tev", _energy_tev),
    "Stream": ("amon_stream", _int),
    "SubType": ("subtype", _str),
    # gamma-ray bursts (Fermi, Swift, INTEGRAL)
    "Data_Signif": ("significance_sigma", _float),
    "Burst_Signif": ("significance_sigma", _float),
    "Inten_Sigma": ("significance_sigma", _float),
    "Rate_Signif": ("rate_significance_sigma", _float),
    "Image_Signif": ("image_significance_sigma", _float),
    "SNR": ("snr", _float),
    "Trig_Timescale": ("trigger_timescale_s", _seconds),
    "Integ_Time": ("integration_time_s", _seconds),
    "Trans_Duration": ("duration_s", _seconds),
    "Time_Error": ("time_error_s", _seconds),
    "Hardness_Ratio": ("hardness_ratio", _float),
    "Reliability": ("reliability", _int),
    "Long_short": ("long_short", _str),
    "Spectral_class": ("spectral_class", _str),
    "Duration_class": ("duration_class", _str),
    "Def_NOT_a_GRB": ("def_not_a_grb", _bool),
    "GRB_Identified": ("grb_identified", _bool),
    "Point_Source": ("point_source", _bool),
    "Notice_Level": ("notice_level", _str),
    "Trigger_Type": ("trigger_type", _str),
    "LightCurve_URL": ("lightcurve_url", _str),
    "Lightcurve_Link": ("lightcurve_url", _str),
    "LocationMap_URL": ("location_map_url", _str),
    # gravitational waves (LVK)
    "Group": ("group", _str),
    "Pipeline": ("pipeline", _str),
    "Search": ("search", _str),
    "Instruments": ("instruments", _str),
    "HasNS": ("has_ns", _prob),
    "ProbHasNS": ("has_ns", _prob),
    "HasRemnant": ("has_remnant", _prob),
    "ProbHasRemnant": ("has_remnant", _prob),
    "HasMassGap": ("has_mass_gap", _prob),
    "HardwareInj": ("hardware_injection", _bool),
    "OpenAlert": ("open_alert", _bool),
    "Vetted": ("vetted", _bool),
    "EventPage": ("gracedb_url", _str),
}


def _properties(what: _What) -> dict[str, PropertyValue]:
    out: dict[str, PropertyValue] = {}
    for p in what.params:
        spec = _PROPERTY_PARAMS.get(p.name)
        if spec is None or p.value in (None, "") or spec[0] in out:
            continue
        out[spec[0]] = spec[1](p)
    idx, prob = what.get("Most_Likely_Index"), what.get("Most_Likely_Prob")
    if idx is not None and prob is not None:
        i = _int(idx)
        out["most_likely_class"] = _GBM_CLASSES.get(i, f"index_{i}")
        out["most_likely_prob"] = _percent(prob)
    return out


def _far(what: _What, mission: str) -> float | None:
    p = what.get("FAR")
    if p is None:
        return None
    default = {"LVK": "Hz", "IceCube": "yr^-1", "AMON": "yr^-1"}.get(mission)
    return _rate_hz(p, default)


def _classification(what: _What) -> dict[str, float]:
    group = what.group("Classification")
    if group is None:
        return {}
    return {name: check_probability(p.value, f"Classification {name}") for name, p in group.items()}


def _skymap_url(what: _What) -> str | None:
    group = what.group("GW_SKYMAP")
    if group is not None:
        for name in ("skymap_fits", "skymap_fits_basic"):
            if name in group:
                return group[name].value
        first = next((p.value for n, p in group.items() if n.startswith("skymap_fits")), None)
        if first is not None:
            return first
    for name in ("skymap_fits", "HealPix_URL"):
        v = what.value(name)
        if v is not None:
            return v
    return None


def _related(what: _What) -> tuple[tuple[RelatedEvent, ...], dict[str, PropertyValue]]:
    group = what.group("External Coincidence", "External_Coincidence")
    if group is None:
        return (), {}

    def opt(name: str) -> str | None:
        p = group.get(name)
        return None if p is None else p.value

    dt = group.get("Time_Difference")
    far_t = group.get("Time_Coincidence_FAR")
    far_st = group.get("Time_Sky_Position_Coincidence_FAR")
    rel = RelatedEvent(
        relation="external_coinc",
        observatory=opt("External_Observatory"),
        event_id=opt("External_GCN_Notice_Id"),
        ivorn=opt("External_Ivorn"),
        search=opt("External_Search"),
        time_difference=None if dt is None else _seconds(dt),
        far_temporal=None if far_t is None else _rate_hz(far_t, "Hz"),
        far_spatiotemporal=None if far_st is None else _rate_hz(far_st, "Hz"),
    )
    extra: dict[str, PropertyValue] = {}
    joint = opt("joint_skymap_fits")
    if joint is not None:
        extra["joint_skymap_url"] = joint
    return (rel,), extra


def _event_name(root: etree._Element, what: _What, mission: str) -> str | None:
    name = what.value("event_name")
    if name is not None:
        return name
    if mission == "LVK":
        return what.value("GraceID")
    inference = _child(_child(root, "Why"), "Inference")
    return _text(_child(inference, "Name"))


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def from_voevent_bytes(raw: bytes, topic: str | None = None) -> Alert:
    """Normalize one GCN Classic / LVK VOEvent XML notice to an :class:`Alert`.

    Parameters
    ----------
    raw
        The VOEvent document as received (bytes; the XML declaration's
        encoding is honoured).
    topic
        Source topic (e.g. ``gcn.classic.voevent.FERMI_GBM_FLT_POS``).  Not
        used: the packet type and IVORN in the document decide everything.

    Returns
    -------
    Alert
        Angles in deg, times UTC, ``far`` in Hz, ``energy_tev`` in TeV,
        durations in s.  See the module docstring for the per-mission rules.

    Raises
    ------
    RejectedNotice
        ``malformed_xml`` (not well-formed), ``unknown_format`` (root is not a
        VOEvent), ``not_a_notice`` (heartbeats, pointing directions),
        ``not_public_alert`` (LVK ``internal=1``), ``missing_field`` (no IVORN,
        event time or event id), ``invalid_coordinates``,
        ``invalid_error_region``, ``invalid_time`` or ``invalid_value``.
    """
    del topic  # content decides; see the docstring
    root = _parse_xml(raw)
    ivorn = (root.get("ivorn") or "").strip()
    if not ivorn:
        raise RejectedNotice("missing_field", "VOEvent has no ivorn attribute")
    what = _What(_child(root, "What"))
    ident = _identify(what, ivorn)
    if _as_bool(what.value("internal")):
        raise RejectedNotice("not_public_alert", "LVK VOEvent with internal=1 (LVK members only)")
    event_time = _event_time(root)
    issued_text = _text(_child(_child(root, "Who"), "Date"))
    issued = None if issued_text is None else parse_time(issued_text, "Who Date")
    event_id, upstream_ids = _event_ids(what, event_time)
    cites = _citations(root)
    kind = _kind(what, ident, cites)
    properties = _properties(what)
    related, extra = _related(what)
    properties.update(extra)
    significant = _as_bool(what.value("Significant"))
    return Alert(
        mission=ident.mission,
        instrument=ident.instrument,
        messenger=messenger_for(ident.mission, ident.instrument),
        notice_type=ident.notice_type,
        event_id=event_id,
        revision=_revision(what, ivorn),
        kind=kind,
        is_test=_is_test(root, what, ident),
        event_time=event_time,
        issued=issued,
        provenance=provenance("voevent", _PARSER_NAME, raw, ivorn),
        event_name=_event_name(root, what, ident.mission),
        upstream_ids=upstream_ids,
        region=_region(root, what, ident, kind),
        skymap_url=_skymap_url(what),
        far=_far(what, ident.mission),
        significant=significant,
        classification=_classification(what),
        properties=properties,
        related=related,
    )

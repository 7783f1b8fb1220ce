# SPDX-License-Identifier: Apache-2.0
"""Notices for coincidence tests, built from real notices of the same type.

Where one side of a real coincidence is not in the shared data, the tests
build it from a real notice of the same type with only the time, position,
trigger id and role changed to the published (or stated) values; the
functions here do that on the XML, so the built notice goes through the same
parser and Kafka path as any other.  Every built notice says what it is made
from in its docstring and in the test that uses it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxml import etree

from tests.corpus import NOTICES

#: A real Fermi GBM Final Position VOEvent (GRB 180524A's, via gwcelery's test data).
GBM_FIN_POS = NOTICES / "voevent/fermi/gwcelery_fermi_final_gcn.xml"
#: The real LVC Initial VOEvent of GW170817 (G298048) as issued by gcn_sender in 2017.
GW170817_INITIAL = NOTICES / "voevent/lvc/gwcelery_G298048-1-Initial.xml"
#: The LVK user-guide sample alerts of the mock superevent MS181101ab.
MS181101AB = NOTICES / "igwn/kafka-json"
MS181101AB_SEQUENCE = ("earlywarning", "preliminary", "initial", "update", "ext-update", "retraction")

#: GRB 170817A: Fermi GBM trigger 524666471 at 2017-08-17T12:41:06.47 UTC (the trigger time in the IVORN
#: the LVK user guide's ``external_coinc`` cites, and in Goldstein et al. 2017, ApJL 848 L14); GBM localization
#: RA 176.8 deg, Dec -39.8 deg, 11.6 deg 1-sigma statistical radius (GCN Circular 21506).
GRB170817A_TIME = datetime(2017, 8, 17, 12, 41, 6, 470000, tzinfo=UTC)
GRB170817A_TRIGGER = 524666471
GRB170817A_POSITION = (176.8, -39.8, 11.6)

_VOE = "{http://www.ivoa.net/xml/VOEvent/v2.0}"
_MJD0 = datetime(1858, 11, 17, tzinfo=UTC)


def gbm_notice(
    time: datetime,
    ra: float,
    dec: float,
    error_deg: float,
    trigger_id: int | None = None,
    role: str = "observation",
    template: Path = GBM_FIN_POS,
) -> bytes:
    """A Fermi GBM Final Position VOEvent made from a real one, with time, position, trigger id and role set.

    Parameters
    ----------
    time
        Trigger time, UTC.
    ra, dec, error_deg
        Position and error radius, deg.
    trigger_id
        GBM trigger number (default: derived from ``time`` so distinct times give distinct events).
    role
        VOEvent role (``observation`` or ``test``).
    """
    tree = etree.parse(str(template))
    root = tree.getroot()
    trig = trigger_id if trigger_id is not None else int(hashlib.sha256(time.isoformat().encode()).hexdigest()[:7], 16)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time.microsecond // 10000:02d}"
    root.set("ivorn", f"ivo://nasa.gsfc.gcn/Fermi#GBM_Fin_Pos{iso}_{trig}_0-001")
    root.set("role", role)
    mjd = (time - _MJD0) / timedelta(days=1)
    sod = (time - time.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    params = {"TrigID": str(trig), "Burst_TJD": str(int(mjd) - 40000), "Burst_SOD": f"{sod:.2f}"}
    for p in root.iter("Param"):
        if p.get("name") in params:
            p.set("value", params[p.get("name")])
    _set_text(root, "ISOTime", iso + "Z")
    _set_text(root, "C1", f"{ra:.4f}")
    _set_text(root, "C2", f"{dec:.4f}")
    _set_text(root, "Error2Radius", f"{error_deg:.4f}")
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def grb170817a_notice() -> bytes:
    """GRB 170817A's GBM notice: a real GBM Final Position VOEvent with the published time and position."""
    ra, dec, err = GRB170817A_POSITION
    return gbm_notice(GRB170817A_TIME, ra, dec, err, trigger_id=GRB170817A_TRIGGER)


def _set_text(root: etree._Element, tag: str, text: str) -> None:
    found = [e for e in root.iter() if isinstance(e.tag, str) and e.tag.split("}")[-1] == tag]
    if len(found) != 1:
        raise ValueError(f"expected one <{tag}> in the template, found {len(found)}")
    found[0].text = text


def ms181101ab(name: str) -> bytes:
    """The user-guide sample alert ``MS181101ab-<name>.json`` (real bytes)."""
    return (MS181101AB / f"MS181101ab-{name}.json").read_bytes()


def utc(s: str) -> datetime:
    """An ISO time as an aware UTC datetime."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)

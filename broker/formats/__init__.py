# SPDX-License-Identifier: Apache-2.0
"""Wire formats: sniff a payload and normalize it to an :class:`~broker.model.Alert`.

The decision is made from the content, never from the topic name alone: the
first bytes tell JSON, XML or Avro container; the document's own markers
(``$schema``, ``superevent_id``, the VOEvent root) tell which notice family.
The topic is passed on as a hint for fields the payload leaves implicit.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from broker.errors import RejectedNotice
from broker.model import Alert

Sniffed = Literal["json", "xml", "avro", "unknown"]

_AVRO_OCF_MAGIC = b"Obj\x01"


def sniff(payload: bytes) -> Sniffed:
    """Tell the container format of ``payload`` from its first bytes."""
    if payload.startswith(_AVRO_OCF_MAGIC):
        return "avro"
    head = payload[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"{", b"[")):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    return "unknown"


def _load_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RejectedNotice("malformed_json", f"not valid JSON: {exc}") from exc


def parse(payload: bytes, topic: str | None = None, *, max_size: int | None = None) -> Alert:
    """Normalize one upstream message to an :class:`Alert`.

    Parameters
    ----------
    payload
        The message value as received.
    topic
        Source topic, a hint only (e.g. for the mission of a GCN JSON notice
        that names none).
    max_size
        Reject payloads larger than this many bytes.

    Raises
    ------
    RejectedNotice
        With a code and a reason naming what is wrong; the caller dead-letters it.
    """
    if max_size is not None and len(payload) > max_size:
        raise RejectedNotice("oversized", f"payload of {len(payload)} bytes exceeds the limit of {max_size} bytes")
    if not payload or payload.isspace():
        raise RejectedNotice("empty", "empty payload")
    kind = sniff(payload)
    if kind == "avro":
        from broker.formats.igwn import from_igwn_avro

        return from_igwn_avro(payload, topic)
    if kind == "xml":
        from broker.formats.voevent import from_voevent_bytes

        return from_voevent_bytes(payload, topic)
    if kind == "json":
        doc = _load_json(payload)
        from broker.formats import igwn

        if igwn.is_gracedb_payload(doc):
            raise RejectedNotice(
                "not_public_alert",
                "LVK-internal GraceDB/igwn-alert payload, not a public igwn.gwalert notice",
            )
        if not isinstance(doc, dict):
            raise RejectedNotice("unknown_format", f"JSON document is a {type(doc).__name__}, not an object")
        if igwn.is_igwn_alert(doc):
            return igwn.from_igwn_json(doc, payload, topic)
        from broker.formats import gcn_json

        if gcn_json.is_gcn_json(doc):
            return gcn_json.from_gcn_json(doc, payload, topic)
        keys = ", ".join(sorted(doc)[:8])
        raise RejectedNotice("unknown_format", f"JSON object of no known notice family (keys: {keys})")
    if payload[:9] == b"SIMPLE  =":
        raise RejectedNotice("unknown_format", "a bare FITS file (sky map?) with no notice envelope")
    if payload[:2] == b"\x1f\x8b":
        raise RejectedNotice("unknown_format", "a gzip-compressed file (sky map?) with no notice envelope")
    raise RejectedNotice("unknown_format", "payload is neither JSON, XML nor an Avro container")

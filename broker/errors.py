# SPDX-License-Identifier: Apache-2.0
"""Exception hierarchy of mmbroker.

Every error raised by the broker derives from :class:`BrokerError`.  Errors
caused by *input* (a notice we cannot turn into an alert) are
:class:`RejectedNotice`; they are dead-lettered with their ``code`` and
``reason`` and never stop the stream.  Infrastructure errors (Kafka, storage)
are :class:`InfrastructureError` and propagate.
"""

from __future__ import annotations

from typing import Literal

RejectCode = Literal[
    "oversized",
    "empty",
    "malformed_json",
    "malformed_xml",
    "malformed_avro",
    "unknown_format",
    "not_a_notice",
    "not_public_alert",
    "missing_field",
    "invalid_value",
    "invalid_coordinates",
    "invalid_error_region",
    "invalid_time",
    "corrupt_skymap",
]


class BrokerError(Exception):
    """Root of every mmbroker error."""


class ConfigError(BrokerError):
    """A setting is missing or inconsistent."""


class CatalogError(ConfigError):
    """A catalog cannot be registered: missing file, missing or malformed column.

    The message names the file and the column.
    """


class RejectedNotice(BrokerError):
    """A message cannot be turned into an :class:`~broker.model.Alert`.

    Parameters
    ----------
    code
        Machine-readable category (one of :data:`RejectCode`), used as the
        ``reason_code`` header of the dead-letter message and as a metric label.
    reason
        Human-readable explanation naming the offending field or value.
    """

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: RejectCode = code
        self.reason = reason


class InfrastructureError(BrokerError):
    """Kafka, storage or another service the broker depends on failed."""


class KafkaError(InfrastructureError):
    """A Kafka produce, consume or commit failed."""


class ArchiveError(InfrastructureError):
    """The archive backend failed."""


class EmbeddedBrokerError(InfrastructureError):
    """The embedded Kafka-compatible broker could not be started."""


class StateError(InfrastructureError):
    """The shared hot state (recent-alert window, revisions, de-duplication) failed.

    The message names the operation; the cause (e.g. a Redis connection error
    that outlasted the retry budget) is chained.
    """

# SPDX-License-Identifier: Apache-2.0
"""mmbroker: a multi-messenger astronomical alert broker.

The public surface for subscribers and filter authors:

* :class:`~broker.model.Alert` and its parts, the normalized alert model;
* :func:`~broker.formats.parse`, one upstream notice to an alert;
* :func:`~broker.avro.encode_alert` / :func:`~broker.avro.decode_alert`, the
  Avro wire form of alerts on mmbroker's topics.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmbroker")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

from broker.model import (  # noqa: E402
    Alert,
    Circle,
    ContainmentRadius,
    Ellipse,
    Point,
    Rectangle,
    RelatedEvent,
    SkyMap,
    SourceMessage,
    SubEvent,
)

__all__ = [
    "Alert",
    "Circle",
    "ContainmentRadius",
    "Ellipse",
    "Point",
    "Rectangle",
    "RelatedEvent",
    "SkyMap",
    "SourceMessage",
    "SubEvent",
    "__version__",
]

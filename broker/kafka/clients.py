# SPDX-License-Identifier: Apache-2.0
"""librdkafka configuration for the broker's consumers, producers and admin client.

The user's ``kafka`` settings pass through untouched; the broker only
``setdefault``s.  With GCN client credentials the OIDC client-credentials
login is configured the way gcn-kafka does it: SASL/OAUTHBEARER over TLS,
librdkafka's built-in ``oidc`` token method against ``auth.<domain>``,
``kafka.<domain>`` as bootstrap server unless one is given, and certifi's CA
bundle for TLS.
"""

from __future__ import annotations

from typing import Literal

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from broker.config import Settings
from broker.errors import ConfigError, KafkaError

Role = Literal["consumer", "producer", "admin"]

#: Every client: idle connections closed by the broker are routine, not news.
COMMON_DEFAULTS: dict[str, str] = {"log.connection.close": "false"}

#: Consumer settings that make a group join and a failure detection fast
#: (librdkafka otherwise waits ~25 s for a new member) without being fragile.
CONSUMER_DEFAULTS: dict[str, str] = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "500",
    "max.poll.interval.ms": "60000",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "topic.metadata.refresh.interval.ms": "2000",
    "fetch.wait.max.ms": "10",
    "partition.assignment.strategy": "cooperative-sticky",
}

PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "linger.ms": "2",
    "compression.type": "lz4",
    "message.max.bytes": str(64 * 1024 * 1024),
}


def client_config(settings: Settings, role: Role, **extra: str) -> dict[str, str]:
    """The librdkafka dict for a client of ``role``.

    Parameters
    ----------
    settings
        Process settings; ``settings.kafka`` wins over every default here.
    role
        ``consumer``, ``producer`` or ``admin``.
    extra
        Per-call defaults (e.g. ``group.id`` for a subscriber); also
        ``setdefault``-ed, so the user's settings still win.
    """
    conf = dict(settings.kafka)
    if settings.gcn_client_id:
        if settings.gcn_client_secret is None:
            raise ConfigError("gcn_client_id is set but gcn_client_secret is not")
        domain = settings.gcn_domain
        conf.setdefault("security.protocol", "sasl_ssl")
        conf.setdefault("sasl.mechanisms", "OAUTHBEARER")
        conf.setdefault("sasl.oauthbearer.method", "oidc")
        conf.setdefault("sasl.oauthbearer.client.id", settings.gcn_client_id)
        conf.setdefault("sasl.oauthbearer.client.secret", settings.gcn_client_secret.get_secret_value())
        conf.setdefault("sasl.oauthbearer.token.endpoint.url", f"https://auth.{domain}/oauth2/token")
        if not settings.bootstrap_servers:
            conf.setdefault("bootstrap.servers", f"kafka.{domain}")
    if conf.get("security.protocol", "").lower() == "sasl_ssl":
        # confluent-kafka wheels link their own OpenSSL, which may not find the
        # system CA bundle; like gcn-kafka, default to certifi's.
        import certifi

        conf.setdefault("ssl.ca.location", certifi.where())
        conf.setdefault("https.ca.location", certifi.where())
    if settings.bootstrap_servers:
        conf.setdefault("bootstrap.servers", settings.bootstrap_servers)
    if "bootstrap.servers" not in conf:
        raise ConfigError("no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS or use 'mmbroker up'")
    for k, v in extra.items():
        conf.setdefault(k.replace("_", "."), v)
    defaults = {"consumer": CONSUMER_DEFAULTS, "producer": PRODUCER_DEFAULTS, "admin": {}}[role]
    for k, v in {**COMMON_DEFAULTS, **defaults}.items():
        conf.setdefault(k, v)
    if role == "consumer":
        conf.setdefault("group.id", settings.group_id)
    return conf


def make_consumer(settings: Settings, **extra: str) -> Consumer:
    """A consumer with :func:`client_config` settings."""
    return Consumer(client_config(settings, "consumer", **extra))


def make_producer(settings: Settings, **extra: str) -> Producer:
    """An idempotent producer with :func:`client_config` settings."""
    return Producer(client_config(settings, "producer", **extra))


def ensure_topics(settings: Settings, topics: list[str], partitions: int = 1, timeout_s: float = 10.0) -> None:
    """Create ``topics`` that do not exist yet (existing ones are left alone).

    Raises
    ------
    KafkaError
        If a topic can be neither found nor created.
    """
    admin = AdminClient(dict(client_config(settings, "admin")))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing and not t.startswith("^")]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing], operation_timeout=timeout_s)
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as exc:  # confluent_kafka raises KafkaException wrapping KafkaError
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                continue
            raise KafkaError(f"cannot create topic {topic}: {exc}") from exc

# SPDX-License-Identifier: Apache-2.0
"""Subscribe: the tag topics and the exact command and Python code that read each."""

from __future__ import annotations

import streamlit as st

from broker.config import Settings
from broker.errors import BrokerError
from ui import shared
from ui.backends import TopicInfo, archive_call, tag_topics


@st.cache_data(ttl=10.0, show_spinner=False)
def _topics(bootstrap: str, prefix: str) -> list[TopicInfo]:
    return tag_topics(shared.settings())


def command(settings: Settings, tag: str, remote: bool = False) -> str:
    """The shell command that prints the alerts of ``tag``'s topic."""
    prefix = "" if settings.prefix == "mmbroker" else f" --prefix {settings.prefix}"
    if remote:
        return (f"KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers or 'kafka.example.org:9092'} "
                f"mmbroker subscribe --tag {tag}{prefix} --from-beginning")
    return f"mmbroker subscribe --tag {tag}{prefix} --from-beginning"


def python_code(settings: Settings, topic: str, remote: bool = False) -> str:
    """Python code (confluent-kafka + ``broker.avro.decode_alert``) that reads ``topic``."""
    bootstrap = settings.bootstrap_servers or "localhost:9092"
    security = ""
    if remote:
        bootstrap = "kafka.example.org:9093"
        security = (
            '    # a remote cluster with SASL over TLS; ask its operators for the values\n'
            '    "security.protocol": "SASL_SSL",\n'
            '    "sasl.mechanisms": "SCRAM-SHA-512",\n'
            '    "sasl.username": "YOUR_USER",\n'
            '    "sasl.password": "YOUR_PASSWORD",\n'
        )
    return (
        "from confluent_kafka import Consumer\n\n"
        "from broker.avro import decode_alert\n\n"
        "consumer = Consumer({\n"
        f'    "bootstrap.servers": "{bootstrap}",\n'
        f"{security}"
        '    "group.id": "my-follow-up",          # your own group: Kafka remembers where you stopped\n'
        '    "auto.offset.reset": "earliest",     # first run: start at the oldest retained alert\n'
        "})\n"
        f'consumer.subscribe(["{topic}"])\n'
        "try:\n"
        "    while True:\n"
        "        msg = consumer.poll(1.0)\n"
        "        if msg is None or msg.error():\n"
        "            continue\n"
        "        alert = decode_alert(msg.value())   # broker.model.Alert\n"
        "        print(alert.event_time, alert.mission, alert.event_id, alert.kind, alert.position, alert.tags)\n"
        "finally:\n"
        "    consumer.close()\n"
    )


def _archived_tag_counts() -> dict[str, str]:
    """Tag -> number of archived alerts carrying it (empty when the archive cannot say)."""
    archive, _ = shared.archive()
    try:
        known = archive_call(archive, "known_tags", default={}) if archive is not None else {}
    except BrokerError:
        return {}
    return {str(k): str(v) for k, v in (known or {}).items()}


def _known_tags() -> list[str]:
    """Tags the broker and the registered filters may give, for when the cluster cannot be asked."""
    from broker.filter_registry import RESERVED_TAGS
    from ui.views.filters import _overview

    s = shared.settings()
    tags = set(RESERVED_TAGS)
    try:
        ov = _overview(str(s.filter_state_file), str(s.filter_stats_file), str(s.user_filter_dir))
        for r in ov.rows:
            tags.update(r.tags)
    except BrokerError:
        pass
    return sorted(tags)


def subscribe_page() -> None:
    """The subscribe page."""
    st.title("Subscribe")
    s = shared.settings()
    st.markdown(
        f"Every alert goes to `{s.alerts_topic}`; an alert carrying tag *X* also goes to `{s.tag_topic('X')}`. "
        f"Messages are Avro (schema `avro_schemas/alert.avsc`); `broker.avro.decode_alert` turns one into a "
        f"`broker.model.Alert`. Cluster: `{s.bootstrap_servers or 'none configured'}`."
    )
    try:
        topics = _topics(s.bootstrap_servers, s.prefix)
        error = None
    except BrokerError as exc:
        topics, error = [], str(exc)
    if error:
        st.error(f"Cannot list the topics: {error}")
    if topics:
        st.subheader(f"{len(topics)} tag topics")
        counts = _archived_tag_counts()
        st.table([{"tag": t.name.removeprefix(s.tag_topic("")), "topic": t.name, "partitions": str(t.partitions),
                   "alerts with this tag in the archive": counts.get(t.name.removeprefix(s.tag_topic("")), "")}
                  for t in topics])
        tags = [t.name.removeprefix(s.tag_topic("")) for t in topics]
    else:
        tags = _known_tags()
        if not error:
            st.info("No tag topic exists yet: the worker creates one when it first publishes an alert with that tag.")
        st.caption("Tags the broker and the registered filters can give: " + ", ".join(f"`{t}`" for t in tags))
    st.subheader("Every alert")
    st.code(f"mmbroker subscribe{'' if s.prefix == 'mmbroker' else ' --prefix ' + s.prefix} --from-beginning",
            language="bash")
    for tag in tags:
        topic = s.tag_topic(tag)
        with st.expander(f"{topic}", expanded=tag in ("gw", "neutrino")):
            st.markdown("**Command line** (this machine, or any machine with `mmbroker` installed):")
            st.code(command(s, tag), language="bash")
            st.markdown("**From another machine** (a remote cluster):")
            st.code(command(s, tag, remote=True), language="bash")
            st.markdown("**Python** (confluent-kafka):")
            st.code(python_code(s, topic), language="python")
    st.subheader("Remote cluster with authentication")
    st.code(python_code(s, s.tag_topic("gw"), remote=True), language="python")

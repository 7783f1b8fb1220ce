# SPDX-License-Identifier: Apache-2.0
"""Elasticsearch for the archive tests: a real server when configured, else osmem-server.

No Elasticsearch server is installable on the build machines.  When
``MMBROKER_TEST_ES_URL`` names one (e.g. ``http://localhost:9200``), the
tests run against it, each module under its own index prefix, removed
afterwards.  Otherwise they run against ``osmem-server`` (PyPI
``osmem-server``, an in-memory OpenSearch-compatible server process), through
its pytest plugin: the session-wide ``osmem_server`` fixture, of which each
module takes a *clone* (a fresh, empty cluster on its own port).

Content types
-------------
The ``elasticsearch`` 9.x client always sends
``application/vnd.elasticsearch+json; compatible-with=9`` (and ``+x-ndjson``
for bulk) as ``Content-Type`` and ``Accept``; Elasticsearch 8 and 9 accept
them, OpenSearch-compatible servers such as osmem answer 406.  The archive is
not weakened for that: :class:`CompatibleJsonNode` is a transport node (a
documented extension point of ``elastic_transport``) that rewrites those two
headers to plain ``application/json`` / ``application/x-ndjson`` just before
sending, and the tests pass it through the archive's ``client_options``
(``node_class=...``), exactly as a deployment against OpenSearch would.  The
node is used only for osmem, never for a real Elasticsearch.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from elastic_transport import HttpHeaders, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import Elasticsearch

from broker.archive.elastic import ElasticsearchArchive

ES_URL_ENV = "MMBROKER_TEST_ES_URL"
_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([\w-]+)\s*;\s*compatible-with=\d+")


class CompatibleJsonNode(Urllib3HttpNode):
    """A urllib3 node sending plain JSON media types instead of the client's compatibility ones."""

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                if name in headers:
                    headers[name] = _COMPAT.sub(r"application/\1", headers[name])
        return super().perform_request(method, target, body=body, headers=headers, request_timeout=request_timeout)


@dataclass
class EsEndpoint:
    """Where the tests' Elasticsearch is, and how to talk to it."""

    url: str
    server: str                                  # what it is, for messages and the README
    client_options: dict[str, Any] = field(default_factory=dict)
    stop: Callable[[], None] | None = None       # stops this endpoint (osmem clones only)
    prefixes: list[str] = field(default_factory=list)

    def archive(self, **kwargs: Any) -> ElasticsearchArchive:
        """A fresh archive under a new index prefix on this endpoint."""
        prefix = f"mmbtest-{uuid.uuid4().hex[:10]}"
        self.prefixes.append(prefix)
        return ElasticsearchArchive(self.url, index=prefix, client_options=self.client_options, **kwargs)

    def client(self) -> Elasticsearch:
        """A plain client for assertions on indices and templates."""
        return Elasticsearch(self.url, **self.client_options)

    def cleanup(self) -> None:
        """Delete the indices and templates the tests created (real servers only; clones vanish)."""
        if self.stop is not None or not self.prefixes:
            return
        es = self.client()
        try:
            for prefix in self.prefixes:
                for suffix in ("alerts", "events", "coincidences", "raw"):
                    name = f"{prefix}-{suffix}"
                    es.options(ignore_status=404).indices.delete(index=name)
                    es.options(ignore_status=404).indices.delete_index_template(name=name)
        finally:
            es.close()


@contextmanager
def es_endpoint(request: pytest.FixtureRequest) -> Iterator[EsEndpoint]:
    """An endpoint: ``MMBROKER_TEST_ES_URL`` if set, else a new clone of the session's osmem-server."""
    url = os.environ.get(ES_URL_ENV)
    if url:
        ep = EsEndpoint(url, server=f"Elasticsearch at {url} ({ES_URL_ENV})")
        try:
            yield ep
        finally:
            ep.cleanup()
        return
    server = request.getfixturevalue("osmem_server")
    clone = server.clone()
    ep = EsEndpoint(
        clone.url,
        server=f"osmem-server {server.version} (OpenSearch-compatible, in memory)",
        client_options={"node_class": CompatibleJsonNode},
        stop=clone.close,
    )
    try:
        yield ep
    finally:
        clone.close()

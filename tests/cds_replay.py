# SPDX-License-Identifier: Apache-2.0
"""A loopback HTTP server replaying recorded CDS XMatch responses to unchanged astroquery.

It answers the two requests astroquery's ``XMatchClass`` makes:

* ``GET <sync>/tables?action=getVizieRTableNames`` -> ``xmatch/tables.csv``;
* ``POST <sync>`` with ``request=xmatch`` (multipart form, ``cat1`` uploaded)
  -> the recorded body registered for the form's ``cat2`` in
  :attr:`CdsReplayServer.xmatch_bodies` (``vizier:II/246/out`` ->
  ``xmatch/query_res.csv``), when ``RESPONSEFORMAT=csv`` was asked (the
  recordings are CSV).  Anything else gets a 4xx with a one-line text body
  saying what the replay lacks (these bodies are the stub's own, never
  presented as CDS responses).

and the request astroquery's ``VizierClass.get_catalogs`` makes:

* ``POST /viz-bin/votable`` with ``-source=<catalogue>`` -> the body registered
  in :attr:`CdsReplayServer.vizier_bodies`.  astroquery always calls VizieR
  over ``https``; start the server with ``tls=True`` and point ``requests`` at
  its self-signed certificate (``REQUESTS_CA_BUNDLE``, see :func:`make_tls_cert`).

Fault modes (:attr:`CdsReplayServer.mode`, applied to the paths in
:attr:`CdsReplayServer.faulty_paths`, all paths when ``None``):

* ``normal``: answer at once;
* ``slow``: wait :attr:`CdsReplayServer.slow_s` seconds, then answer normally;
* ``http500``: answer ``500`` with a short text body.

Every request is counted per path (:meth:`CdsReplayServer.count`) and
recorded with its form fields and uploaded files (:attr:`CdsReplayServer.requests`)
*before* any delay or fault, so tests can assert "one request per batch",
"served from cache" and "circuit open: no request".
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data" / "cds-responses"
SYNC_PATH = "/xmatch/api/v1/sync"
TABLES_PATH = SYNC_PATH + "/tables"

Mode = Literal["normal", "slow", "http500"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if not msg.is_multipart():
        return form, files
    for part in msg.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if part.get_filename() is not None:
            files[name] = payload
        else:
            form[name] = payload.decode()
    return form, files


class CdsReplayServer:
    """The replay server on a free loopback port, served by a background thread.

    Parameters
    ----------
    data_dir
        Folder of the recorded responses (``tests/data/cds-responses``).
    slow_s
        Delay of the ``slow`` mode (s).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, data_dir: Path = DATA, slow_s: float = 1.0, tls: tuple[Path, Path] | None = None) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.vizier_bodies: dict[str, str] = {
            "B/iram/pdbi": "vizier/afgl2591_iram.xml",
            "J/ApJ/706/83": "vizier/kang2010.xml",
        }
        self.slow_s = slow_s
        self.mode: Mode = "normal"
        self.faulty_paths: set[str] | None = None
        self.xmatch_bodies: dict[str, str] = {"vizier:II/246/out": "xmatch/query_res.csv"}
        self.requests: list[RecordedRequest] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle

    def start(self) -> CdsReplayServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                replay._handle(self, "GET")

            def do_POST(self) -> None:
                replay._handle(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                log.debug("replay: " + format, *args)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="cds-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (delayed answers are released at once)."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> CdsReplayServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- what tests look at

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def xmatch_url(self) -> str:
        """The XMatch ``sync`` endpoint to give astroquery (``XMatchClass.URL``)."""
        return f"http://127.0.0.1:{self.port}{SYNC_PATH}"

    @property
    def vizier_server(self) -> str:
        """``host:port`` to give astroquery's ``VizierClass(vizier_server=...)``."""
        return f"127.0.0.1:{self.port}"

    def count(self, path: str = SYNC_PATH, method: str | None = None) -> int:
        """Requests received for ``path`` (any method, or only ``method``)."""
        with self._lock:
            return sum(n for (m, p), n in self._counts.items() if p == path and method in (None, m))

    def total(self) -> int:
        """Requests received, all paths."""
        with self._lock:
            return sum(self._counts.values())

    def xmatch_posts(self) -> list[RecordedRequest]:
        """The ``request=xmatch`` POSTs received, in order."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.form.get("request") == "xmatch"]

    # ---- serving

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        form: dict[str, str] = {}
        files: dict[str, bytes] = {}
        if method == "POST":
            body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
            ctype = h.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):
                form, files = _parse_multipart(ctype, body)
            elif url.path.startswith("/viz-bin/"):  # VizieR ASU: one "-key=value" per line
                form = dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
            else:
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        with self._lock:
            self._counts[(method, url.path)] += 1
            self.requests.append(RecordedRequest(method, url.path, query, form, files))
            mode = self.mode
            faulty = self.faulty_paths is None or url.path in self.faulty_paths
        try:
            if faulty and mode == "slow" and self._stopping.wait(self.slow_s):
                return
            if faulty and mode == "http500":
                self._send(h, 500, b"replay server: http500 mode\n")
                return
            status, body_out, ctype_out = self._route(method, url.path, query, form)
            self._send(h, status, body_out, ctype_out)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("replay: client went away before the answer")

    def _route(self, method: str, path: str, query: dict[str, str], form: dict[str, str]) -> tuple[int, bytes, str]:
        if method == "GET" and path == TABLES_PATH and query.get("action") == "getVizieRTableNames":
            return 200, (self.data_dir / "xmatch" / "tables.csv").read_bytes(), "text/plain"
        if method == "POST" and path == SYNC_PATH and form.get("request") == "xmatch":
            cat2 = form.get("cat2", "")
            name = self.xmatch_bodies.get(cat2)
            if name is None:
                return 404, f"replay server: no recorded response for cat2={cat2}\n".encode(), "text/plain"
            if form.get("RESPONSEFORMAT", "votable").lower() != "csv":
                return 400, b"replay server: only CSV recordings (RESPONSEFORMAT=csv)\n", "text/plain"
            return 200, (self.data_dir / name).read_bytes(), "text/csv"
        if method == "POST" and path == "/viz-bin/votable":
            source = form.get("-source") or form.get("source", "")
            name = self.vizier_bodies.get(source)
            if name is None:
                return 404, f"replay server: no recorded VizieR response for {source}\n".encode(), "text/plain"
            return 200, (self.data_dir / name).read_bytes(), "text/xml"
        return 404, f"replay server: nothing recorded for {method} {path}\n".encode(), "text/plain"

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "text/plain") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype + "; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def make_tls_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for ``127.0.0.1`` (openssl), for the https replay."""
    cert, key = folder / "replay-cert.pem", folder / "replay-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key

"""``RecordingServer``: an HTTP server on 127.0.0.1 that records every request and
answers as Sentry's and Rollbar's ingestion APIs do, so that error reporters are
tested with their real SDKs sending over real HTTP — nothing patched.

It keeps each request as it arrived (method, path, query, headers, the raw body)
and as a test wants to read it: the body decoded (``Content-Encoding`` gzip,
deflate, and br when the ``brotli`` module is installed; chunked bodies), parsed as
JSON, and a Sentry envelope split into its items. It answers what the SDKs expect:

* ``POST /api/<project>/envelope/`` (sentry-sdk 2.x) — ``200 {}``;
* ``POST …/item/`` (Rollbar, ``endpoint="<url>/api/1/"``) —
  ``200 {"err": 0, "result": {"id": null, "uuid": "<the item's uuid>"}}``;
* anything else — ``200 {}``.

A Sentry DSN that reaches it is :meth:`RecordingServer.sentry_dsn`
(``http://public@127.0.0.1:PORT/1``); Rollbar's ``endpoint`` is
:attr:`RecordingServer.rollbar_endpoint`. :meth:`~RecordingServer.wait_for` waits for
what a test expects (it wakes on every request, no polling), and
:meth:`~RecordingServer.stall` holds the answers back, as a hanging service would, so
that a reporter's bounded ``flush`` can be tested.

Standard library only::

    with RecordingServer() as server:
        client = sentry_sdk.Client(dsn=server.sentry_dsn(), default_integrations=False)
        ...
        [event] = server.wait_for(lambda requests: events_of(requests))

The fixture ``recording_server`` (:mod:`qhive_testkit.fixtures`) is one per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import re
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

__all__ = ["EnvelopeItem", "Recorded", "RecordingServer", "rollbar_items", "sentry_events"]

T = TypeVar("T")

#: The longest a stalled request is held before it is answered anyway.
STALL_LIMIT = 120.0
_ENVELOPE = re.compile(r"^/api/[^/]+/envelope/?$")


@dataclasses.dataclass(frozen=True)
class EnvelopeItem:
    """One item of a Sentry envelope: its header line and its payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str | None:
        return self.headers.get("type")

    @property
    def json(self) -> Any:
        """The payload parsed as JSON, or None when it is not JSON."""
        return _json_or_none(self.payload)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One request as it arrived, and decoded.

    :ivar headers: header names in lower case (a repeated header: the last value).
    :ivar raw: the body as sent (compressed, if it was).
    :ivar body: the body decoded (``Content-Encoding`` undone).
    :ivar error: why the body could not be decoded or parsed, else None.
    :ivar envelope: the envelope's header line, when the body is a Sentry envelope.
    :ivar items: the envelope's items.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    body: bytes
    error: str | None = None
    envelope: dict[str, Any] | None = None
    items: tuple[EnvelopeItem, ...] = ()

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        return _json_or_none(self.body)

    def summary(self) -> str:
        kinds = f" items {[i.type for i in self.items]}" if self.envelope is not None else ""
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.method} {self.path}{kinds}{f' ({self.error})' if self.error else ''}: " \
               f"{text}"


def sentry_events(requests: list[Recorded]) -> list[dict[str, Any]]:
    """The Sentry error events among ``requests`` (the ``event`` items of envelopes)."""
    return [item.json for r in requests for item in r.items
            if item.type == "event" and isinstance(item.json, dict)]


def rollbar_items(requests: list[Recorded]) -> list[dict[str, Any]]:
    """The ``data`` of every Rollbar item posted among ``requests``."""
    found = []
    for r in requests:
        body = r.json if r.method == "POST" and r.path.endswith("/item/") else None
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            found.append(body["data"])
    return found


class RecordingServer:
    """A recording HTTP server on 127.0.0.1; see the module docstring.

    :param port: the port to listen on (default: a free one, taken at :meth:`start`).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or 0
        self._requests: list[Recorded] = []
        self._arrived = threading.Condition()
        self._open = threading.Event()  # cleared while stalled
        self._open.set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- where it is
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sentry_dsn(self, project: int = 1, key: str = "public") -> str:
        """A DSN for this server: the SDK posts to ``/api/<project>/envelope/``."""
        return f"http://{key}@127.0.0.1:{self.port}/{project}"

    @property
    def rollbar_endpoint(self) -> str:
        """Rollbar's ``endpoint`` setting for this server (items go to ``…/item/``)."""
        return f"{self.url}/api/1/"

    # -- running
    def start(self) -> RecordingServer:
        # Port 0: the system picks a free one as it binds, so none can take it in between.
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True  # a stalled request must not hold up stop()
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"recording-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._open.set()  # stalled requests are answered, not left hanging
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what arrived
    @property
    def requests(self) -> list[Recorded]:
        """Every request so far, oldest first (a copy)."""
        with self._arrived:
            return list(self._requests)

    def sentry_events(self) -> list[dict[str, Any]]:
        return sentry_events(self.requests)

    def rollbar_items(self) -> list[dict[str, Any]]:
        return rollbar_items(self.requests)

    def clear(self) -> None:
        with self._arrived:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[list[Recorded]], T], timeout: float = 30.0,
                 what: str = "the expected requests") -> T:
        """``predicate(requests)`` once it is truthy (called again on each new request);
        fails the test after ``timeout`` seconds, listing what arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                value = predicate(list(self._requests))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            requests = list(self._requests)
        arrived = "\n".join(f"  {r.summary()}" for r in requests) or "  (none)"
        pytest.fail(f"{what} did not arrive at {self.url} within {timeout} s; "
                    f"{len(requests)} request(s) arrived:\n{arrived}", pytrace=False)

    @contextlib.contextmanager
    def stall(self) -> Iterator[None]:
        """Within the block, requests are recorded but not answered (each one at most
        :data:`STALL_LIMIT` s), as a hanging service: a client waits for its timeout."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    # -- called by the handler
    def _record(self, recorded: Recorded) -> None:
        with self._arrived:
            self._requests.append(recorded)
            self._arrived.notify_all()


def _handler_for(owner: RecordingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

        def do_POST(self) -> None:
            self._handle()

        do_PUT = do_GET = do_DELETE = do_POST

        def _handle(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            raw = self._read_body(headers)
            recorded = decode(self.command, parts.path, urllib.parse.parse_qs(parts.query),
                              headers, raw)
            owner._record(recorded)
            owner._open.wait(STALL_LIMIT)
            self._answer(recorded)

        def _read_body(self, headers: dict[str, str]) -> bytes:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self, recorded: Recorded) -> None:
            reply: dict[str, Any] = {}
            if recorded.path.endswith("/item/"):
                data = recorded.json.get("data") if isinstance(recorded.json, dict) else None
                item_uuid = data.get("uuid") if isinstance(data, dict) else None
                reply = {"err": 0, "result": {"id": None, "uuid": item_uuid or str(uuid.uuid4())}}
            body = json.dumps(reply).encode()
            with contextlib.suppress(OSError):  # the client gave up waiting (a stall)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output is for the test

    return Handler


def decode(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
           raw: bytes) -> Recorded:
    """A :class:`Recorded` request: its body decoded, a Sentry envelope split into items.
    Never raises: what cannot be decoded is said in ``error``."""
    try:
        body = _decompress(raw, headers.get("content-encoding", ""))
    except Exception as exc:
        return Recorded(method, path, query, headers, raw, raw,
                        error=f"cannot undo Content-Encoding: {type(exc).__name__}: {exc}")
    is_envelope = (_ENVELOPE.match(path) is not None
                   or headers.get("content-type", "").startswith("application/x-sentry-envelope"))
    if not is_envelope:
        return Recorded(method, path, query, headers, raw, body)
    try:
        envelope, items = parse_envelope(body)
    except ValueError as exc:
        return Recorded(method, path, query, headers, raw, body,
                        error=f"not a Sentry envelope: {exc}")
    return Recorded(method, path, query, headers, raw, body, envelope=envelope, items=items)


def _decompress(raw: bytes, encoding: str) -> bytes:
    body = raw
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif coding == "deflate":  # zlib-wrapped as the RFC says; raw deflate as some send
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif coding == "br":
            # late and optional: brotli is no dependency; sentry-sdk sends br only with it
            import brotli

            body = brotli.decompress(body)
        elif coding != "identity":
            raise ValueError(f"unknown content coding {coding!r}")
    return body


def parse_envelope(body: bytes) -> tuple[dict[str, Any], tuple[EnvelopeItem, ...]]:
    """A Sentry envelope's header and items: a JSON header line, then per item a JSON
    header line and a payload of ``length`` bytes, or up to the next newline."""
    head, _, rest = body.partition(b"\n")
    envelope = _json_line(head, "envelope header")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        header = _json_line(line, f"header of item {len(items)}")
        length = header.get("length")
        if isinstance(length, int):
            if len(rest) < length:
                raise ValueError(f"item {len(items)} says {length} bytes, {len(rest)} left")
            payload, rest = rest[:length], rest[length:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append(EnvelopeItem(header, payload))
    return envelope, tuple(items)


def _json_line(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None

"""The recording server, over real HTTP from the standard library's client: what it
records and decodes (gzip, deflate, chunked, Sentry envelopes, Rollbar JSON), what it
answers, ``wait_for`` and ``stall``. The fixture ``recording_server`` is
:mod:`qhive_testkit.fixtures`' (registered for the whole repository by pytest's
``addopts``). The reporter packages test the server with the real SDKs."""

from __future__ import annotations

import gzip
import http.client
import importlib.util
import json
import threading
import zlib

import pytest
from qhive_testkit.recording_server import parse_envelope, rollbar_items, sentry_events

EVENT = {"event_id": "9ec79c33ec9942ab8353589fcb2e04dc", "level": "error",
         "exception": {"values": [{"type": "ValueError", "value": "boom"}]}}


def envelope(*, with_length: bool) -> bytes:
    """An envelope as sentry-sdk writes it: an event item (with ``length`` or without),
    and a client report after it."""
    event = json.dumps(EVENT).encode()
    report = json.dumps({"discarded_events": []}).encode()
    head = {"type": "event", **({"length": len(event)} if with_length else {})}
    return b"\n".join([json.dumps({"event_id": EVENT["event_id"]}).encode(),
                       json.dumps(head).encode(), event,
                       json.dumps({"type": "client_report"}).encode(), report]) + b"\n"


def post(server, path: str, body: bytes, timeout: float = 30.0, chunked: bool = False,
         **headers: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        if chunked:
            connection.request("POST", path, body=iter([body[:7], body[7:]]),
                               headers=headers, encode_chunked=True)
        else:
            connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_records_a_request_as_it_arrived(recording_server):
    status, reply = post(recording_server, "/api/7/envelope/?sentry_key=public&x=1",
                         envelope(with_length=True),
                         **{"X-Sentry-Auth": "Sentry sentry_key=public"})
    assert (status, reply) == (200, {})
    [request] = recording_server.requests
    assert (request.method, request.path) == ("POST", "/api/7/envelope/")
    assert request.query == {"sentry_key": ["public"], "x": ["1"]}
    assert request.headers["x-sentry-auth"] == "Sentry sentry_key=public"
    assert request.raw == request.body == envelope(with_length=True)
    assert request.error is None


@pytest.mark.parametrize("with_length", [True, False], ids=["length", "newline"])
def test_splits_a_gzipped_sentry_envelope_into_items(recording_server, with_length):
    post(recording_server, "/api/1/envelope/", gzip.compress(envelope(with_length=with_length)),
         **{"Content-Encoding": "gzip", "Content-Type": "application/x-sentry-envelope"})
    [request] = recording_server.requests
    assert request.envelope == {"event_id": EVENT["event_id"]}
    assert [item.type for item in request.items] == ["event", "client_report"]
    assert request.items[0].json == EVENT
    assert sentry_events(recording_server.requests) == [EVENT]
    assert recording_server.sentry_events() == [EVENT]


def test_an_item_longer_than_the_envelope_is_an_error_not_a_crash(recording_server):
    body = b'{}\n{"type":"event","length":500}\n{"short":true}\n'
    assert post(recording_server, "/api/1/envelope/", body)[0] == 200
    [request] = recording_server.requests
    assert "item 0 says 500 bytes" in request.error and request.items == ()


@pytest.mark.parametrize("compress", [zlib.compress,
                                      lambda data: zlib.compress(data)[2:-4]],
                         ids=["zlib", "raw-deflate"])
def test_answers_a_deflated_rollbar_item_with_its_uuid(recording_server, compress):
    item = {"access_token": "t0ken", "data": {"uuid": "5a1d", "level": "error"}}
    status, reply = post(recording_server, "/api/1/item/", compress(json.dumps(item).encode()),
                         **{"Content-Encoding": "deflate"})
    assert (status, reply) == (200, {"err": 0, "result": {"id": None, "uuid": "5a1d"}})
    assert recording_server.requests[0].json == item
    assert rollbar_items(recording_server.requests) == [item["data"]]


def test_reads_a_chunked_body(recording_server):
    item = {"data": {"uuid": "c4"}}
    post(recording_server, "/api/1/item/", json.dumps(item).encode(), chunked=True)
    assert recording_server.rollbar_items() == [{"uuid": "c4"}]


def test_brotli_is_decoded_when_installed_and_named_when_not(recording_server):
    if importlib.util.find_spec("brotli"):
        import brotli  # only where it is installed

        post(recording_server, "/api/1/item/", brotli.compress(b'{"data": {"uuid": "b"}}'),
             **{"Content-Encoding": "br"})
        assert recording_server.rollbar_items() == [{"uuid": "b"}]
    else:
        assert post(recording_server, "/api/1/item/", b"\x8b\x00",
                    **{"Content-Encoding": "br"})[0] == 200
        assert "brotli" in recording_server.requests[0].error


def test_a_body_that_cannot_be_decoded_is_recorded_with_the_reason(recording_server):
    assert post(recording_server, "/api/1/envelope/", b"not gzip",
                **{"Content-Encoding": "gzip"})[0] == 200
    [request] = recording_server.requests
    assert request.raw == b"not gzip" and "Content-Encoding" in request.error


def test_parse_envelope_refuses_what_is_not_one():
    with pytest.raises(ValueError, match="envelope header is not JSON"):
        parse_envelope(b"hello\n")


def test_wait_for_returns_what_the_predicate_found(recording_server):
    sender = threading.Thread(target=post, args=(recording_server, "/api/1/envelope/",
                                                  envelope(with_length=True)))
    sender.start()
    events = recording_server.wait_for(sentry_events, timeout=30)
    sender.join()
    assert events == [EVENT]


def test_wait_for_fails_listing_what_arrived(recording_server):
    post(recording_server, "/api/1/item/", b'{"data": {"uuid": "u1"}}')
    with pytest.raises(pytest.fail.Exception) as failed:
        recording_server.wait_for(sentry_events, timeout=0.2, what="a Sentry event")
    assert "a Sentry event did not arrive" in str(failed.value)
    assert '1 request(s) arrived:\n  POST /api/1/item/: {"data": {"uuid": "u1"}}' \
        in str(failed.value)


def test_stall_holds_answers_back_but_records(recording_server):
    with recording_server.stall():
        with pytest.raises(TimeoutError):
            post(recording_server, "/api/1/item/", b'{"data": {"uuid": "late"}}', timeout=0.5)
        assert recording_server.rollbar_items() == [{"uuid": "late"}]
    assert post(recording_server, "/api/1/item/", b'{"data": {"uuid": "now"}}')[0] == 200


def test_stop_answers_stalled_requests(recording_server):
    replies = []
    with recording_server.stall():
        sender = threading.Thread(target=lambda: replies.append(
            post(recording_server, "/api/1/item/", b'{"data": {"uuid": "s"}}')))
        sender.start()
        recording_server.wait_for(rollbar_items)
        recording_server.stop()
        sender.join(30)
    assert replies == [(200, {"err": 0, "result": {"id": None, "uuid": "s"}})]

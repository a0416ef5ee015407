"""An IronMQ v3 server for tests only: the endpoints the ``iron-mq`` client calls for
qhive's IronMQ broker, in memory, with the service's rules. Not for production.

No IronMQ server can be run locally, so the broker's tests run the real ``iron-mq``
client (and ``iron_core``, ``requests``) against this one. It implements exactly what
the broker uses, under ``/3/projects/{project_id}``, JSON in and out:

=========================================  ===============================================
``PUT    /queues/{q}``                      create a queue (``{"queue": {...}}`` optional)
``GET    /queues/{q}``                      queue info: ``size`` counts every message not
                                            deleted, reserved ones too; ``total_messages``
``DELETE /queues/{q}``                      delete the queue and its messages
``POST   /queues/{q}/messages``             post up to 100 messages (creates the queue)
``GET    /queues/{q}/messages?n=N``         peek: the first ``n`` (≤ 100) messages a
                                            reservation would take, not reserved
``DELETE /queues/{q}/messages``             ``{"ids": [{"id", "reservation_id"}]}``: delete
                                            up to 100 (all or none); ``{}``: clear the queue
``POST   /queues/{q}/reservations``         reserve ``n`` (≤ 100) for ``timeout`` seconds,
                                            long-polling up to ``wait`` (≤ 30) seconds
``DELETE /queues/{q}/messages/{id}``        delete one (``reservation_id``)
``POST   /queues/{q}/messages/{id}/touch``  a new reservation (a new ``reservation_id``)
``POST   /queues/{q}/messages/{id}/release`` back on the queue, at its front (``delay``)
=========================================  ===============================================

The rules, from the v3 API reference (iron-io/docs ``mq/3/reference/api``) and the
``iron-mq`` client's own test suite, which runs against the real service:

* ``Authorization: OAuth <token>`` must carry the token: anything else is
  ``401 Unauthorized``. Another project id is ``404 Project not found``.
* A reservation lasts ``timeout`` seconds (default the queue's ``message_timeout``, 60);
  the service takes 30 to 86,400 (``min_timeout`` lowers the 30, so that tests need
  not wait half a minute); ``n`` is 1 to 100, ``wait`` 0 to 30, all whole numbers
  (``400`` otherwise). A long poll returns as soon as a message can be taken.
* A reserved message not deleted in time goes back to the *front* of the queue, as a
  released one does; ``reserved_count`` counts every reservation.
* Deleting, touching or releasing a reserved message needs its current
  ``reservation_id``: a stale one (the reservation ran out, or the message was
  touched or reserved again since) is ``403 Reservation timed out``. A message that is
  not reserved is deleted without one. A message that is gone is ``404``.
* Reserving, peeking at or asking about a queue that does not exist is
  ``404 Queue not found``; posting creates it. A queue name outside 1 to 255 letters,
  digits, spaces, ``-``, ``_`` and ``.`` is ``400 Invalid queue name`` (the service's
  exact rule is not documented: this one stands for it).
* A message body is a non-empty string of at most ``max_message_size`` bytes
  (``413`` otherwise): IronMQ's plans allow 64 KB or 256 KB, more on request.

What it leaves out: push queues, subscribers, alerts, webhooks, message expiry
(``message_expiration``), listing queues, getting a message by id.

State is in memory and thread-safe (one lock). :meth:`IronMQEmulator.advance` moves
its clock forward, so that a test sees a reservation run out without sleeping.

Run it in a thread (:class:`IronMQEmulator`), as a process of its own
(``python -m qhive_testkit.ironmq_emulator --port N``, or :class:`EmulatorProcess`),
or through the fixtures ``ironmq_emulator`` and ``ironmq_emulator_process``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import re
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from qhive_testkit.services import stop_process

__all__ = ["PROJECT_ID", "TOKEN", "EmulatorProcess", "IronMQEmulator", "ironmq_emulator",
           "ironmq_emulator_process"]

#: The credentials every emulator accepts unless told otherwise.
TOKEN = "qhive-emulator-token"
PROJECT_ID = "5e1f0c0de0000000000000a1"

#: The service's limits (API reference): reservation timeout, long poll, batch size.
MIN_TIMEOUT, MAX_TIMEOUT = 30, 86_400
MAX_WAIT = 30
MAX_BATCH = 100
MAX_DELAY = 604_800
DEFAULT_TIMEOUT = 60
DEFAULT_EXPIRATION = 604_800
#: The largest message of IronMQ's public plans.
MAX_MESSAGE_SIZE = 256 * 1024

_QUEUE_NAME = re.compile(r"[A-Za-z0-9 _.\-]{1,255}")
READY_LINE = "ironmq emulator listening on "


class _Refused(Exception):
    """An error answer: the HTTP status and IronMQ's ``{"msg": ...}``."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.msg = status, msg


@dataclasses.dataclass
class _Message:
    id: str
    body: str
    order: int  # place in the queue: smaller comes out first
    reserved_count: int = 0
    reservation_id: str | None = None
    reserved_until: float = 0.0
    available_at: float = 0.0  # a delay on post or release


class _Queue:
    """One queue. Heaps with lazy deletion: an entry counts only while it still
    matches its message (same order / same reservation)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: dict[str, _Message] = {}
        self.ready: list[tuple[int, str]] = []  # (order, id)
        self.leases: list[tuple[float, str, str]] = []  # (until, id, reservation id)
        self.delayed: list[tuple[float, str]] = []  # (available at, id)
        self.total = 0
        self.front = 0  # released and expired messages go before everything
        self.back = 0
        self.message_timeout = DEFAULT_TIMEOUT
        self.message_expiration = DEFAULT_EXPIRATION

    def to_front(self, message: _Message) -> None:
        self.front -= 1
        message.order = self.front
        heapq.heappush(self.ready, (message.order, message.id))

    def to_back(self, message: _Message) -> None:
        self.back += 1
        message.order = self.back
        heapq.heappush(self.ready, (message.order, message.id))

    def settle(self, now: float) -> None:
        """Put back the messages whose reservation or delay ran out."""
        while self.leases and self.leases[0][0] <= now:
            _, message_id, reservation = heapq.heappop(self.leases)
            message = self.messages.get(message_id)
            if message is not None and message.reservation_id == reservation:
                message.reservation_id = None
                self.to_front(message)
        while self.delayed and self.delayed[0][0] <= now:
            at, message_id = heapq.heappop(self.delayed)
            message = self.messages.get(message_id)
            if (message is not None and message.reservation_id is None
                    and message.available_at == at):
                self.to_back(message)

    def _takeable(self, order: int, message_id: str, now: float) -> _Message | None:
        message = self.messages.get(message_id)
        if (message is None or message.order != order or message.reservation_id is not None
                or message.available_at > now):
            return None
        return message

    def take(self, n: int, now: float) -> list[_Message]:
        taken: list[_Message] = []
        while self.ready and len(taken) < n:
            order, message_id = heapq.heappop(self.ready)
            message = self._takeable(order, message_id, now)
            if message is not None:
                taken.append(message)
        return taken

    def peek(self, n: int, now: float) -> list[_Message]:
        found = []
        for order, message_id in sorted(self.ready):
            message = self._takeable(order, message_id, now)
            if message is not None:
                found.append(message)
                if len(found) == n:
                    break
        return found

    def next_event(self) -> float | None:
        """When a reservation or delay runs out next (a long poll wakes then)."""
        times = [heap[0][0] for heap in (self.leases, self.delayed) if heap]
        return min(times) if times else None

    def clear(self) -> None:
        self.messages.clear()
        self.ready.clear()
        self.leases.clear()
        self.delayed.clear()


class _State:
    """Every queue of the project, behind one condition (lock + long-poll wake-up)."""

    def __init__(self, *, token: str, project_id: str, min_timeout: int,
                 max_message_size: int) -> None:
        self.token = token
        self.project_id = project_id
        self.min_timeout = min_timeout
        self.max_message_size = max_message_size
        self.queues: dict[str, _Queue] = {}
        self.changed = threading.Condition()
        self.offset = 0.0  # advance()
        self.closing = False
        self.requests = 0  # answered so far (tests count them)
        self.next_id = 1_000_000_000_000_000_000 + int(time.time())

    def now(self) -> float:
        return time.monotonic() + self.offset

    # -- helpers

    def queue(self, name: str, *, create: bool = False) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            if not create:
                raise _Refused(404, "Queue not found")
            queue = self.queues[name] = _Queue(name)
        queue.settle(self.now())
        return queue

    def _new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def _held(self, queue: _Queue, message_id: str, reservation_id: Any) -> _Message:
        """The message, if ``reservation_id`` is its current reservation."""
        message = queue.messages.get(message_id)
        if message is None:
            raise _Refused(404, "Message not found")
        if not reservation_id or message.reservation_id != reservation_id:
            raise _Refused(403, "Reservation timed out")
        return message

    # -- queues

    def create_queue(self, name: str, body: dict) -> dict:
        options = body.get("queue") or {}
        if not isinstance(options, dict):
            raise _Refused(400, "queue must be an object")
        queue = self.queue(name, create=True)
        if "message_timeout" in options:
            queue.message_timeout = self._int(options["message_timeout"], "message_timeout",
                                              self.min_timeout, MAX_TIMEOUT)
        if "message_expiration" in options:
            queue.message_expiration = self._int(options["message_expiration"],
                                                 "message_expiration", 0, 2_592_000)
        return {"queue": self._describe(queue, sizes=False)}

    def _describe(self, queue: _Queue, *, sizes: bool = True) -> dict:
        info: dict[str, Any] = {"project_id": self.project_id, "name": queue.name,
                                "message_timeout": queue.message_timeout,
                                "message_expiration": queue.message_expiration,
                                "type": "pull"}
        if sizes:
            info.update(size=len(queue.messages), total_messages=queue.total)
        return info

    def info(self, name: str) -> dict:
        return {"queue": self._describe(self.queue(name))}

    def delete_queue(self, name: str) -> dict:
        self.queue(name)  # 404 when missing
        del self.queues[name]
        return {"msg": "Deleted"}

    # -- messages

    def post(self, name: str, body: dict) -> dict:
        messages = body.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            raise _Refused(400, f"messages must be a list of 1 to {MAX_BATCH} messages")
        checked = []
        for item in messages:
            text = item.get("body") if isinstance(item, dict) else None
            if not isinstance(text, str) or not text:
                raise _Refused(400, "message body must be a non-empty string")
            size = len(text.encode())
            if size > self.max_message_size:
                raise _Refused(413, f"Message too big: {size} bytes, the limit is "
                                    f"{self.max_message_size}")
            delay = self._int(item.get("delay", 0), "delay", 0, MAX_DELAY)
            checked.append((text, delay))
        queue = self.queue(name, create=True)
        now, ids = self.now(), []
        for text, delay in checked:
            message = _Message(self._new_id(), text, 0)
            queue.messages[message.id] = message
            queue.total += 1
            if delay:
                message.available_at = now + delay
                heapq.heappush(queue.delayed, (message.available_at, message.id))
            else:
                queue.to_back(message)
            ids.append(message.id)
        return {"ids": ids, "msg": "Messages put on queue."}

    def reserve(self, name: str, body: dict) -> dict:
        n = self._int(body.get("n", 1), "n", 1, MAX_BATCH)
        wait = self._int(body.get("wait", 0), "wait", 0, MAX_WAIT)
        delete = body.get("delete", False)
        queue = self.queue(name)
        timeout = self._int(body.get("timeout", queue.message_timeout), "timeout",
                            self.min_timeout, MAX_TIMEOUT)
        deadline = time.monotonic() + wait
        while True:
            now = self.now()
            queue.settle(now)
            taken = queue.take(n, now)
            if taken or self.closing or self.queues.get(name) is not queue:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = queue.next_event()
            self.changed.wait(left if event is None else max(0.001, min(left, event - now)))
        reply = []
        for message in taken:
            message.reserved_count += 1
            if delete:
                del queue.messages[message.id]
            else:
                message.reservation_id = uuid.uuid4().hex
                message.reserved_until = now + timeout
                heapq.heappush(queue.leases, (message.reserved_until, message.id,
                                              message.reservation_id))
            reply.append({"id": message.id, "body": message.body,
                          "reserved_count": message.reserved_count,
                          "reservation_id": message.reservation_id})
        return {"messages": reply}

    def peek(self, name: str, n: int) -> dict:
        queue = self.queue(name)
        return {"messages": [{"id": m.id, "body": m.body, "reserved_count": m.reserved_count}
                             for m in queue.peek(n, self.now())]}

    def _deletable(self, queue: _Queue, message_id: str, reservation_id: Any) -> None:
        """Refuse the delete unless the message is not reserved and no reservation id is
        given (none is needed then), or ``reservation_id`` is its current one."""
        message = queue.messages.get(message_id)
        if message is None or message.reservation_id is not None or reservation_id:
            self._held(queue, message_id, reservation_id)

    def delete(self, name: str, message_id: str, body: dict) -> dict:
        queue = self.queue(name)
        self._deletable(queue, message_id, body.get("reservation_id"))
        del queue.messages[message_id]
        return {"msg": "Deleted"}

    def delete_many_or_clear(self, name: str, body: dict) -> dict:
        queue = self.queue(name)
        if "ids" not in body:
            queue.clear()
            return {"msg": "Cleared"}
        items = body["ids"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise _Refused(400, f"ids must be a list of 1 to {MAX_BATCH} messages")
        doomed = []
        for item in items:  # all or none: check every one first
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise _Refused(400, "each of ids must be an object with an id")
            self._deletable(queue, item["id"], item.get("reservation_id"))
            doomed.append(item["id"])
        for message_id in doomed:
            queue.messages.pop(message_id, None)
        return {"msg": "Deleted"}

    def touch(self, name: str, message_id: str, body: dict) -> dict:
        queue = self.queue(name)
        timeout = self._int(body.get("timeout", queue.message_timeout), "timeout",
                            self.min_timeout, MAX_TIMEOUT)
        message = self._held(queue, message_id, body.get("reservation_id"))
        message.reservation_id = uuid.uuid4().hex
        message.reserved_until = self.now() + timeout
        heapq.heappush(queue.leases, (message.reserved_until, message.id,
                                      message.reservation_id))
        return {"reservation_id": message.reservation_id, "msg": "Touched"}

    def release(self, name: str, message_id: str, body: dict) -> dict:
        queue = self.queue(name)
        delay = self._int(body.get("delay", 0), "delay", 0, MAX_DELAY)
        message = self._held(queue, message_id, body.get("reservation_id"))
        message.reservation_id = None
        if delay:
            message.available_at = self.now() + delay
            heapq.heappush(queue.delayed, (message.available_at, message.id))
        else:
            queue.to_front(message)
        return {"msg": "Released"}

    @staticmethod
    def _int(value: Any, name: str, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            raise _Refused(400, f"{name} must be a whole number from {low} to {high}, "
                                f"got {value!r}")
        return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service and requests use it
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            # The client went away mid-request (killed between headers and body): drop
            # it, as a server does. Read as "{}", it would reserve for the default 60 s.
            self.close_connection = True
            return
        try:
            status, reply = self._route(method, raw)
        except _Refused as refused:
            status, reply = refused.status, {"msg": refused.msg}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, raw: bytes) -> tuple[int, dict]:
        state = self.server.state
        with state.changed:
            state.requests += 1
        if self.headers.get("Authorization") != f"OAuth {state.token}":
            raise _Refused(401, "Unauthorized")
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")]
        if len(parts) < 6 or parts[:3] != ["", "3", "projects"] or parts[4] != "queues":
            raise _Refused(404, "Not found")
        if parts[3] != state.project_id:
            raise _Refused(404, "Project not found")
        name, rest = parts[5], parts[6:]
        if not _QUEUE_NAME.fullmatch(name):
            raise _Refused(400, "Invalid queue name")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise _Refused(400, "Invalid JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "Invalid JSON: an object is expected")
        with state.changed:
            reply = self._dispatch(state, method, name, rest, body, url.query)
            state.changed.notify_all()
        return (201 if (method, rest) == ("POST", ["messages"]) else 200), reply

    @staticmethod
    def _dispatch(state: _State, method: str, name: str, rest: list[str], body: dict,
                  query: str) -> dict:
        match (method, rest):
            case ("PUT", []):
                return state.create_queue(name, body)
            case ("GET", []):
                return state.info(name)
            case ("DELETE", []):
                return state.delete_queue(name)
            case ("POST", ["messages"]):
                return state.post(name, body)
            case ("GET", ["messages"]):
                n = parse_qs(query).get("n", ["1"])[0]
                return state.peek(name, state._int(int(n) if n.isdigit() else n, "n", 1,
                                                   MAX_BATCH))
            case ("DELETE", ["messages"]):
                return state.delete_many_or_clear(name, body)
            case ("POST", ["reservations"]):
                return state.reserve(name, body)
            case ("DELETE", ["messages", message_id]):
                return state.delete(name, message_id, body)
            case ("POST", ["messages", message_id, "touch"]):
                return state.touch(name, message_id, body)
            case ("POST", ["messages", message_id, "release"]):
                return state.release(name, message_id, body)
        raise _Refused(404, "Not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a long poll in progress never holds up a stop
    state: _State
    verbose: bool = False


class IronMQEmulator:
    """The emulator in a thread of this process.

    :param token: the one token it accepts (``401`` for any other).
    :param project_id: the one project it has.
    :param min_timeout: the shortest reservation it grants (the service: 30 s).
    :param max_message_size: the largest message body, in bytes (``413`` beyond).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str = TOKEN,
                 project_id: str = PROJECT_ID, min_timeout: int = MIN_TIMEOUT,
                 max_message_size: int = MAX_MESSAGE_SIZE, verbose: bool = False) -> None:
        self.state = _State(token=token, project_id=project_id, min_timeout=min_timeout,
                            max_message_size=max_message_size)
        self.httpd = _Server((host, port), _Handler)
        self.httpd.state = self.state
        self.httpd.verbose = verbose
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def options(self, **more: Any) -> dict[str, Any]:
        """A ``Q_CLUSTER["iron_mq"]`` for this server."""
        return {"host": self.host, "port": self.port, "protocol": "http",
                "token": self.state.token, "project_id": self.state.project_id, **more}

    def start(self) -> IronMQEmulator:
        self._thread = threading.Thread(target=self.serve_forever, name="ironmq-emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)  # stop() waits one interval

    def stop(self) -> None:
        with self.state.changed:  # long polls return at once
            self.state.closing = True
            self.state.changed.notify_all()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(30)
        self.httpd.server_close()

    def __enter__(self) -> IronMQEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for tests: look at and steer the state

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock ``seconds`` forward (reservations run out)."""
        with self.state.changed:
            self.state.offset += seconds
            self.state.changed.notify_all()

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """Every message of ``queue`` as stored (id, body, reserved, reserved_count)."""
        with self.state.changed:
            found = self.state.queues.get(queue)
            if found is None:
                return []
            found.settle(self.state.now())
            return [{"id": m.id, "body": m.body, "reserved": m.reservation_id is not None,
                     "reserved_count": m.reserved_count} for m in found.messages.values()]

    def queue_names(self) -> list[str]:
        with self.state.changed:
            return sorted(self.state.queues)


class EmulatorProcess:
    """``python -m qhive_testkit.ironmq_emulator`` as a process of its own, that a test
    may stop (an outage) and start again on the same port."""

    def __init__(self, folder: Path, *, port: int = 0, token: str = TOKEN,
                 project_id: str = PROJECT_ID, min_timeout: int = MIN_TIMEOUT,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.folder = Path(folder)
        self.port = port
        self.token = token
        self.project_id = project_id
        self.min_timeout = min_timeout
        self.max_message_size = max_message_size
        self.process: subprocess.Popen | None = None

    def options(self, **more: Any) -> dict[str, Any]:
        """A ``Q_CLUSTER["iron_mq"]`` for this server."""
        return {"host": "127.0.0.1", "port": self.port, "protocol": "http",
                "token": self.token, "project_id": self.project_id, **more}

    def start(self, within: float = 30.0) -> EmulatorProcess:
        log = (self.folder / "ironmq-emulator.log").open("a")
        args = [sys.executable, "-m", "qhive_testkit.ironmq_emulator", "--port", str(self.port),
                "--token", self.token, "--project-id", self.project_id,
                "--min-timeout", str(self.min_timeout),
                "--max-message-size", str(self.max_message_size)]
        with log:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], within)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith(READY_LINE):
            self.stop()
            tail = (self.folder / "ironmq-emulator.log").read_text()[-2000:]
            pytest.fail(f"the IronMQ emulator did not start within {within} s: {line!r}\n{tail}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """SIGTERM; every queue and message is gone (the state is in memory)."""
        stop_process(self.process)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def ironmq_emulator() -> Iterator[IronMQEmulator]:
    """An emulator in a thread of the test process, for the test alone. It grants
    reservations from 1 s (tests wait for them to run out) and takes messages of up to
    2 MiB (the broker contract sends one of 1 MiB: base64 makes it 1.4 MB)."""
    emulator = IronMQEmulator(min_timeout=1, max_message_size=2 << 20).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def ironmq_emulator_process(tmp_path) -> Iterator[EmulatorProcess]:
    """The emulator as a process of its own (reservations from 1 s); stopped at the end."""
    server = EmulatorProcess(tmp_path, min_timeout=1).start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qhive_testkit.ironmq_emulator",
        description="An in-memory IronMQ v3 server for tests (not for production).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--project-id", default=PROJECT_ID)
    parser.add_argument("--min-timeout", type=int, default=MIN_TIMEOUT,
                        help="shortest reservation in seconds (the service: 30)")
    parser.add_argument("--max-message-size", type=int, default=MAX_MESSAGE_SIZE,
                        help="largest message body in bytes (default: 256 KiB)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    emulator = IronMQEmulator(args.host, args.port, token=args.token,
                              project_id=args.project_id, min_timeout=args.min_timeout,
                              max_message_size=args.max_message_size, verbose=args.verbose)
    print(f"{READY_LINE}{emulator.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever()


if __name__ == "__main__":
    main()

"""One slot of shared memory per worker: what it runs, as the sentinel sees it.

Workers take, run, save and acknowledge their tasks on their own; nothing goes
through the sentinel per task. What the sentinel needs to supervise them, each
worker writes into its slot — no message, no system call: the running task
(its message payload and receipt, so that a worker killed or timed out still
gives its task a saved failure), when it started and its deadline, the
attempt, its progress, and counters for the stats.

Writes follow a sequence lock: the worker makes the sequence number odd, writes,
makes it even again; a reader retries until it reads the same even number
before and after. Only the worker writes its slot (its task's threads through
:func:`qhive.progress.progress`, under the worker's lock).
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
from typing import Any

#: The header: seq, state, deadline (monotonic), started (epoch), timeout, progress
#: (NaN: none), attempt (-1: none), task counter, processed, failed, prefetched,
#: unsaved, broker errors, result store errors.
_HEADER = struct.Struct("<IIddddiIQQIIQQ")
_LENGTH = struct.Struct("<I")
#: Room for a progress note (200 characters of UTF-8), a receipt and a payload.
NOTE_BYTES, ACK_BYTES = 1024, 16 * 1024
#: Payloads up to this size are kept whole; a bigger one keeps the task without its
#: arguments (a failure saved for it then has none).
PAYLOAD_BYTES = 1024 * 1024 + 64 * 1024
_NOTE_AT = _HEADER.size
_ACK_AT = _NOTE_AT + _LENGTH.size + NOTE_BYTES
_PAYLOAD_AT = _ACK_AT + _LENGTH.size + ACK_BYTES
SLOT_BYTES = _PAYLOAD_AT + 1 + _LENGTH.size + PAYLOAD_BYTES

IDLE, RUNNING = 0, 1
#: The payload's first byte: the message payload as taken, or the task pickled without
#: its arguments (a payload too big for the slot).
WHOLE, STRIPPED = b"M", b"T"


@dataclasses.dataclass(slots=True)
class SlotState:
    """A consistent read of a slot's header."""

    running: bool
    deadline: float | None
    started: float | None
    timeout: float | None
    progress: float | None
    attempt: int | None
    tasks: int  # tasks started so far: tells one task from the next
    processed: int
    failed: int
    prefetched: int
    unsaved: int
    broker_errors: int
    store_errors: int


class Slot:
    """Worker ``index``'s slot in ``memory`` (a buffer shared by the cluster's processes)."""

    def __init__(self, memory: Any, index: int) -> None:
        self.index = index
        self._buf = memoryview(memory).cast("B")[index * SLOT_BYTES:(index + 1) * SLOT_BYTES]
        self._values = list(_HEADER.unpack_from(self._buf))

    # -- the worker's side (the only writer)
    def _write(self, more: Any = None, **changes: Any) -> None:
        values = self._values
        values[0] = (values[0] + 1) & 0xFFFFFFFF  # odd: writing
        _LENGTH.pack_into(self._buf, 0, values[0])
        if more is not None:
            more()
        for name, value in changes.items():
            values[_FIELDS[name]] = value
        values[0] = (values[0] + 1) & 0xFFFFFFFF
        _HEADER.pack_into(self._buf, 0, *values)

    def reset(self) -> None:
        """A new worker in this slot: nothing running, counters from zero."""
        seq = self._values[0] & ~1
        self._values = [seq, IDLE, 0.0, 0.0, 0.0, math.nan, -1, 0, 0, 0, 0, 0, 0, 0]
        self._write()

    def begin(self, payload: bytes | None, stripped: Any, ack_id: str | None,
              attempt: int | None, timeout: float | None) -> None:
        """A task starts: keep what the sentinel needs to save its failure.
        ``stripped()`` gives the task pickled without its arguments, asked for only
        when ``payload`` does not fit."""
        def keep() -> None:
            if payload is not None and len(payload) <= PAYLOAD_BYTES:
                kind, data = WHOLE, payload
            else:
                kind, data = STRIPPED, stripped()[:PAYLOAD_BYTES]
            self._put(_PAYLOAD_AT, kind + _LENGTH.pack(len(data)), data)
            ack = (ack_id or "").encode()[:ACK_BYTES]
            self._put(_ACK_AT, _LENGTH.pack(len(ack) if ack_id is not None else _NONE), ack)
            _LENGTH.pack_into(self._buf, _NOTE_AT, _NONE)

        self._write(keep, state=RUNNING, started=time.time(),
                    deadline=time.monotonic() + timeout if timeout else 0.0,
                    timeout=timeout or 0.0, progress=math.nan,
                    attempt=-1 if attempt is None else attempt,
                    tasks=self._values[_FIELDS["tasks"]] + 1)

    def _put(self, at: int, head: bytes, data: bytes) -> None:
        end = at + len(head)
        self._buf[at:end] = head
        self._buf[end:end + len(data)] = data

    def end(self) -> None:
        self._write(state=IDLE, deadline=0.0)

    def progress(self, fraction: float, note: str | None) -> None:
        data = (note or "").encode()[:NOTE_BYTES]
        self._write(lambda: self._put(
            _NOTE_AT, _LENGTH.pack(len(data) if note is not None else _NONE), data),
            progress=fraction)

    def count(self, **counters: int) -> None:
        """Set counters: ``processed`` and ``failed`` (results saved), ``prefetched``,
        ``unsaved``, ``broker_errors``, ``store_errors``."""
        if any(self._values[_FIELDS[k]] != v for k, v in counters.items()):
            self._write(**counters)

    # -- the sentinel's side
    def _consistent(self, read: Any) -> Any:
        while True:
            before = _LENGTH.unpack_from(self._buf)[0]
            if before & 1:
                time.sleep(0)
                continue
            value = read()
            if _LENGTH.unpack_from(self._buf)[0] == before:
                return value

    def read(self) -> SlotState:
        """The header, consistent."""
        (_seq, state, deadline, started, timeout, fraction, attempt, tasks, processed, failed,
         prefetched, unsaved, broker_errors, store_errors) = self._consistent(
            lambda: _HEADER.unpack_from(self._buf))
        running = state == RUNNING
        return SlotState(
            running=running, deadline=(deadline or None) if running else None,
            started=started if running else None, timeout=timeout or None,
            progress=None if math.isnan(fraction) or not running else fraction,
            attempt=None if attempt < 0 else attempt, tasks=tasks, processed=processed,
            failed=failed, prefetched=prefetched, unsaved=unsaved,
            broker_errors=broker_errors, store_errors=store_errors)

    def note(self) -> str | None:
        return self._consistent(lambda: self._text(_NOTE_AT, NOTE_BYTES))

    def task_data(self) -> tuple[int, bytes, bytes, str | None]:
        """The task started last, as kept by :meth:`begin`: the task counter, kind
        (:data:`WHOLE` or :data:`STRIPPED`), its bytes, and the message's receipt."""
        def read() -> tuple[int, bytes, bytes, str | None]:
            buf, at = self._buf, _PAYLOAD_AT
            length = min(_LENGTH.unpack_from(buf, at + 1)[0], PAYLOAD_BYTES)
            start = at + 1 + _LENGTH.size
            ack = self._text(_ACK_AT, ACK_BYTES)
            return (_HEADER.unpack_from(buf)[7], bytes(buf[at:at + 1]),
                    bytes(buf[start:start + length]), ack)
        return self._consistent(read)

    def _text(self, at: int, limit: int) -> str | None:
        length = _LENGTH.unpack_from(self._buf, at)[0]
        if length == _NONE:
            return None
        start = at + _LENGTH.size
        return bytes(self._buf[start:start + min(length, limit)]).decode(errors="replace")


_NONE = 0xFFFFFFFF
_FIELDS = {name: i for i, name in enumerate(
    ("seq", "state", "deadline", "started", "timeout", "progress", "attempt", "tasks",
     "processed", "failed", "prefetched", "unsaved", "broker_errors", "store_errors"))}

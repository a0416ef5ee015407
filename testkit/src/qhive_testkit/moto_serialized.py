"""``python -m qhive_testkit.moto_serialized -H HOST -p PORT``: moto's server with its SQS
receives made one at a time.

moto's ``SQSBackend.receive_message`` walks a queue's messages without a lock, and its
HTTP server answers each request on a thread of its own: two ReceiveMessage calls at the
same moment can both take one message (seen as "1 message went to both consumers" in
the broker contract's concurrency test, about once in three loaded runs). SQS hands a
message to one receiver per visibility timeout. Here each look at the queue holds a lock;
a long poll waits between looks without it, so one waiting receiver never blocks another.
"""

from __future__ import annotations

import threading
import time

from moto.server import main
from moto.sqs import models

_lock = threading.Lock()
_receive = models.SQSBackend.receive_message
#: Pause between two looks of a long poll.
LOOK_EVERY = 0.01


def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout,
                    message_attribute_names=None):
    end = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with _lock:
            got = _receive(self, queue_name, count, 0, visibility_timeout,
                           message_attribute_names)
        if got or time.monotonic() >= end:
            return got
        time.sleep(min(LOOK_EVERY, max(end - time.monotonic(), 0)))


models.SQSBackend.receive_message = receive_message

if __name__ == "__main__":
    main()

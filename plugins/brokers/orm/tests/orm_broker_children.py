"""Targets of the processes spawned by test_orm_broker.py (spawned children
import them by name: conftest.py puts this folder on sys.path).

Children get a pickled OrmBroker and no ``django.setup()``: only the
``DJANGO_SETTINGS_MODULE`` their parent exported, as a cluster worker would.
"""

import random
import time
import traceback


def consume(broker, barrier, producer_done, results):
    """Drain the queue in random batch sizes, acknowledging everything taken.

    Reports ``("ok", [(payload, deliveries), ...])`` in the order received.
    """
    try:
        rng = random.Random()
        received = []
        barrier.wait(timeout=60)
        deadline = time.monotonic() + 60
        empty_looks = 0
        while time.monotonic() < deadline:
            messages = broker.dequeue(count=rng.randint(1, 6), timeout=0.2)
            if not messages:
                empty_looks += 1
                if producer_done.is_set() and empty_looks >= 3:
                    break
                continue
            empty_looks = 0
            for message in messages:
                received.append((message.payload, message.deliveries))
                broker.acknowledge(message.ack_id)
        broker.close()
        results.put(("ok", received))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def enqueue_when_told(broker, go, results):
    """Wait for ``go``, let the parent settle into its dequeue, enqueue, report when."""
    try:
        go.wait(timeout=60)
        time.sleep(0.5)
        broker.enqueue(b"from another process")
        results.put(("ok", time.time()))
        broker.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))


def forked_dequeue(broker, alias, results):
    """In a fork()ed child: leave the parent's connections alone and use the broker."""
    try:
        from django.db import connections

        connections[alias].connection = None  # the parent's socket: not ours to use
        got = broker.dequeue(timeout=0.3)  # drops the inherited LISTEN connection
        results.put(("ok", [m.payload for m in got]))
        broker.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))

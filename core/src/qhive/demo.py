"""A short tour of the core, with the in-memory broker and result store.

Run it with ``make demo`` (or ``python -m qhive.demo``): it enqueues a few
tasks, runs them in this process and prints what the result store kept. The
Django demo with a real cluster replaces it once the Django app exists.
"""

from __future__ import annotations

import math
import secrets
import time

from qhive.config import Config
from qhive.pipeline import Pipeline


def fail_loudly(reason: str) -> None:
    raise RuntimeError(reason)


async def add_later(a: int, b: int) -> int:  # async def tasks run too
    return a + b


def main() -> None:
    config = Config.from_dict(
        {"name": "demo", "broker": "memory", "result_store": "memory", "compress": True,
         "save_limit": 0},  # keep every success (the default keeps the last 250)
        secret_key=secrets.token_hex(32),
    )
    pipeline = Pipeline(config)
    print(f"qhive demo: broker {pipeline.broker.info()}, "
          f"result store {type(pipeline.result_store).__name__}, serializer {config.serializer}")

    started = time.perf_counter()
    ids = [pipeline.enqueue(math.factorial, (n,), group="factorials") for n in range(10, 510)]
    copysign = pipeline.enqueue("math.copysign", (2, -1), task_name="copysign")
    added = pipeline.enqueue(add_later, (40, 2))
    failing = pipeline.enqueue(fail_loudly, ("on purpose",))
    queued = pipeline.broker.queue_size()
    done = pipeline.drain()
    elapsed = time.perf_counter() - started

    store = pipeline.result_store
    print(f"enqueued {queued} tasks, ran {len(done)} in {elapsed * 1000:.0f} ms "
          f"({len(done) / elapsed:,.0f} tasks/s, in one process)")
    print(f"factorial(10) = {store.get(ids[0]).result}")
    print(f"group 'factorials': {store.count_group('factorials')} results")
    print(f"math.copysign(2, -1) = {store.get_by_name('copysign').result}")
    print(f"async add_later(40, 2) = {store.get(added).result}")
    failure = store.get(failing)
    print(f"fail_loudly failed as expected: {failure.result.splitlines()[-1]}")
    assert store.get(copysign).success and not failure.success
    pipeline.close()


if __name__ == "__main__":
    main()

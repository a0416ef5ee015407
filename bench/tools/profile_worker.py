"""Profile one worker's task loop in this process: the CPU it spends per task.

    .venv/bin/python bench/tools/profile_worker.py [N] [redis|orm]   # QL=4 PROF=1 env

Enqueues N ``add`` tasks on the Redis broker (127.0.0.1:6379, db ``$REDIS_DB`` or 9,
flushed), then runs :class:`qhive.cluster.worker.TaskLoop` on them until all ran, and
prints the wall and CPU time per task; with ``PROF=1`` under cProfile (about twice
slower) with the 45 costliest calls. ``QL`` is ``queue_limit`` for 2 workers: the most
a worker takes at once is ``QL / 2`` (the measurement behind the default of 50 per worker).
"""

import cProfile
import multiprocessing
import os
import pstats
import sys
import time
from multiprocessing.heap import Arena

import redis
from qhive.cluster.slots import SLOT_BYTES, Slot
from qhive.cluster.worker import TaskLoop
from qhive.config import Config
from qhive.pipeline import Pipeline

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
STORE = sys.argv[2] if len(sys.argv) > 2 else "redis"
DB = int(os.environ.get("REDIS_DB", 9))
REDIS = {"host": "127.0.0.1", "port": 6379, "db": DB}

q_cluster = {"name": "profile", "broker": "redis", "redis": REDIS, "workers": 2,
             "result_store": STORE, "queue_limit": int(os.environ.get("QL", 100)),
             "recycle": 0}
if STORE == "redis":
    q_cluster["result_store_options"] = {"redis": REDIS}
config = Config.from_dict(q_cluster, secret_key="profile")
redis.Redis(**REDIS).flushdb()
caller = Pipeline(config)
started = time.perf_counter()
for i in range(N):
    caller.enqueue("qhive_testkit.tasks.add", (i, i))
print(f"enqueue: {(time.perf_counter() - started) / N * 1e3:.3f} ms per task")

arena = Arena(SLOT_BYTES)
slot = Slot(arena.buffer, 0)
slot.reset()
_, theirs = multiprocessing.Pipe()
loop = TaskLoop(theirs, slot, Pipeline(config))
profile = cProfile.Profile() if os.environ.get("PROF") else None
wall, cpu = time.perf_counter(), time.process_time()
if profile:
    profile.enable()
while loop.ran < N:
    if messages := loop._take():
        loop._run_batch(messages)
if profile:
    profile.disable()
print(f"worker: {(time.perf_counter() - wall) / N * 1e3:.3f} ms wall, "
      f"{(time.process_time() - cpu) / N * 1e3:.3f} ms CPU per task; last batch {loop.batch}")
if profile:
    pstats.Stats(profile).sort_stats("cumulative").print_stats(45)

"""One of several processes saving the same results at once (run by test_store.py).

``python racer.py '<json spec>'`` prints ``ready``, waits for a line on stdin,
then saves, one ``save()`` each:

* ``spec["rounds"]`` times a failure of every id in ``spec["contested"]`` —
  and, in the process with ``spec["succeeds"]``, a success of each halfway
  through, so that failures of the other processes keep coming after it;
* a failure of every id in ``spec["failing"]``;
* ``spec["limited"]`` successes into a store with ``save_limit`` = ``spec["save_limit"]``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from qhive.config import Config
from qhive.contracts import TaskResult
from qhive_store_redis.store import RedisResultStore


def result(task_id: str, *, success: bool, group: str, micros: int = 0) -> TaskResult:
    stopped = dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    return TaskResult(id=task_id, name=task_id, func="math.floor", started=stopped,
                      stopped=stopped, success=success, group=group,
                      result="ok" if success else "boom")


def main(spec: dict) -> None:
    def store(**settings) -> RedisResultStore:
        config = Config.from_dict({"name": spec["name"], **settings}, secret_key=spec["secret"])
        return RedisResultStore(config=config, redis=spec["redis"])

    plain, limited = store(save_limit=0), store(save_limit=spec["save_limit"])
    plain.get("warm-up")  # connect before the start, so that the saves overlap
    limited.get("warm-up")
    print("ready", flush=True)
    sys.stdin.readline()
    for round_ in range(spec["rounds"]):
        for task_id in spec["contested"]:
            plain.save(result(task_id, success=False, group="contested"))
        if spec["succeeds"] and round_ == spec["rounds"] // 2:
            for task_id in spec["contested"]:
                plain.save(result(task_id, success=True, group="contested"))
    for task_id in spec["failing"]:
        plain.save(result(task_id, success=False, group="failing"))
    for n in range(spec["limited"]):
        micros = spec["process"] * spec["limited"] + n
        limited.save(result(f"{spec['name']}-limited-{micros}", success=True, group="limited",
                            micros=micros))
    print("done", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

"""The README's main command: ``make demo`` runs ``demo/run.py``, which starts a real
``manage.py qcluster`` on a fresh SQLite database and checks what it computed."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from qhive_testkit.services import delete_redis_keys, redis_url, require

RUN = Path(__file__).resolve().parent.parent / "demo" / "run.py"


@pytest.mark.slow
def test_demo_runs_tasks_on_a_real_cluster_and_exits_0(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "Q_CLUSTER_NAME")}
    env["QHIVE_DEMO_DATA"] = str(tmp_path)  # not demo/.data: a `make demo` may be running
    done = subprocess.run([sys.executable, str(RUN)], env=env, capture_output=True, text=True,
                          timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    # Results computed by the cluster's workers, read back from the database.
    assert "collatz_steps(27) = 111 " in output
    assert "group 'collatz': 300 results; longest: collatz_steps(231) = 127" in output
    assert "slow_square(3) = 9 " in output
    assert "fibonacci(90) = 2880067194370816120 " in output
    # The failing tasks, with their error line.
    assert "failures (5, on purpose" in output
    for n in range(1, 6):
        assert f"always_fails({n}): ValueError: demo failure #{n}: this task fails on purpose" \
            in output
    # The hooks ran in the cluster; it stopped cleanly on SIGTERM.
    assert "hook calls seen: 45 " in output
    assert re.search(r"hook got [a-z-]+: slow_square\(1\) returned 1$", output, re.M), output
    # The schedule ran three times, once per slot, then paused itself.
    assert "schedule 'heartbeat' (every second, repeats=3): ran 3 times, now repeats=0" in output
    assert len(re.findall(r"^  slot \d\d:\d\d:\d\d: finished \d+ ms after it was due$", output,
                          re.M)) == 3, output
    assert re.search(r"qcluster \| .* stopped \(349 processed, 5 failed\)", output), output
    assert "cluster exited with code 0" in output
    assert re.search(r"^demo OK: 346 tasks run by a real cluster, 341 results checked, "
                     r"5 failures as intended, 45 hook calls, 3 scheduled runs, [\d,]+ tasks/s, "
                     r"[\d.]+ s in all$",
                     output, re.M), output
    assert (tmp_path / "db.sqlite3").exists()
    assert "Processed 'demo_project.tasks.collatz_steps'" in (tmp_path / "qcluster.log").read_text()


BLOCKED = """raise ImportError("qhive_store_orm is blocked by tests/test_demo.py: "
                  "the demo must run without the ORM result store")
"""


@pytest.mark.slow
def test_demo_runs_with_the_redis_result_store_and_no_orm_store_importable(tmp_path):
    """qhive_django reaches its result store through the store's contract: with results
    in Redis, ``qhive_store_orm`` neither installed as an app nor importable, the demo
    (cluster, task API, schedules, hooks) gives the same results."""
    require("redis")
    blocker = tmp_path / "blocked" / "qhive_store_orm"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(BLOCKED)
    name = f"demo-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "Q_CLUSTER_NAME")}
    env.update(QHIVE_DEMO_DATA=str(tmp_path), QHIVE_DEMO_RESULT_STORE="redis",
               QHIVE_DEMO_REDIS=redis_url(), QHIVE_DEMO_NAME=name,
               PYTHONPATH=os.pathsep.join(filter(None, [str(blocker.parent),
                                                        env.get("PYTHONPATH")])))
    check = subprocess.run([sys.executable, "-c", "import qhive_store_orm"], env=env,
                           capture_output=True, text=True)
    assert check.returncode == 1 and "blocked by tests/test_demo.py" in check.stderr
    client = redis.Redis.from_url(redis_url())
    try:
        done = subprocess.run([sys.executable, str(RUN)], env=env, capture_output=True,
                              text=True, timeout=180)
        in_redis = sum(1 for _ in client.scan_iter(f"qhive:{{{name}}}:result:*", count=1000))
    finally:
        delete_redis_keys(f"qhive:{{{name}}}:*")
        client.close()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "blocked by tests/test_demo.py" not in output
    assert "collatz_steps(27) = 111 " in output
    assert "group 'collatz': 300 results; longest: collatz_steps(231) = 127" in output
    assert "fibonacci(90) = 2880067194370816120 " in output
    assert "failures (5, on purpose" in output
    assert "hook calls seen: 45 " in output
    assert "schedule 'heartbeat' (every second, repeats=3): ran 3 times, now repeats=0" in output
    assert re.search(r"^demo OK: 346 tasks run by a real cluster, 341 results checked, ", output,
                     re.M), output
    assert in_redis == 346 + 3, "every result (and the schedule's 3) is in Redis"

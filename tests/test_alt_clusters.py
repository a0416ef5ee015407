"""``ALT_CLUSTERS``: two real clusters, ``long`` and ``short``, side by side, each
consuming its own queue (``qcluster --name``); ``cluster=`` routes tasks, chain
links and cached results to and from them."""

from __future__ import annotations

import uuid

from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import delete_redis_keys, redis_url, require

T = "qhive_testkit.tasks"


def test_tasks_routed_to_a_cluster_run_only_there(cluster_settings, qcluster, request):
    from qhive_django.tasks import (
        async_chain,
        async_task,
        fetch,
        fetch_group,
        queue_size,
        result,
        result_group,
    )
    from qhive_store_orm.models import Task

    require("redis")  # the cache both clusters and this process share
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": redis_url(),
                          "KEY_PREFIX": f"alt{uuid.uuid4().hex[:8]}"}}
    request.addfinalizer(lambda: delete_redis_keys(f"{caches['default']['KEY_PREFIX']}:*"))
    q = cluster_settings(caches=caches, ALT_CLUSTERS={
        "long": {"timeout": 600, "retry": 1200, "workers": 1},
        "short": {"timeout": 5, "workers": 1},
    })
    long = qcluster(q, "--name", "long", caches=caches)
    short = qcluster(q, "--name", "short", caches=caches)

    routed = {async_task(f"{T}.add", n, 1, cluster=name, group=f"to-{name}"): name
              for n in range(20) for name in ("long", "short")}
    root = async_task(f"{T}.add", 0, 0)  # the root cluster's queue: nobody runs it here
    wait_until(lambda: Task.objects.filter(pk__in=routed).count() == len(routed),
               what="every routed task's result")
    ran = dict(Task.objects.filter(pk__in=routed).values_list("id", "cluster"))
    assert ran == routed, "each task ran in the cluster it was sent to, and only there"
    assert (queue_size("long"), queue_size("short"), queue_size()) == (0, 0, 1)
    assert result(root) is None

    # A chain moves between the clusters: each link names where it runs.
    group = async_chain([(f"{T}.add", (1, 1), {"cluster": "short"}),
                         (f"{T}.add", (2, 2), {"cluster": "long"}),
                         (f"{T}.add", (3, 3), {"cluster": "short"})])
    assert sorted(result_group(group, count=3, wait=60_000)) == [2, 4, 6]
    assert [t.cluster for t in fetch_group(group)][::-1] == ["short", "long", "short"]

    # Cached results of a routed task are found without naming its cluster.
    cached = async_task(f"{T}.add", 20, 22, cluster="long", cached=True)
    assert result(cached, wait=60_000, cached=True) == 42
    assert fetch(cached, cached=True).cluster == "long"
    assert not Task.objects.filter(pk=cached).exists()

    assert long.stop() == 0 and short.stop() == 0
    assert "(queue 'long'" in long.log() and "(queue 'short'" in short.log()

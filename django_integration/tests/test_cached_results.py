"""Cached results (``cached=``) as Django Q2 keeps them: in the cache whatever ``save``
says, and a group the cache does not know counts as ``None``."""

from qhive_django.conf import get_pipeline
from qhive_django.tasks import (
    async_task,
    count_group,
    delete_group,
    fetch_group,
    result,
    result_group,
)

T = "qhive_testkit.tasks"


def test_cached_results_are_kept_whatever_save_says(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 1, 2, cached=True, save=False, group="kept")
    get_pipeline().drain()
    assert result(task_id, cached=True) == 3
    assert result_group("kept", cached=True) == [3]
    assert [t.result for t in fetch_group("kept", cached=True)] == [3]
    assert result(task_id) is None  # save=False: nothing in the result store


def test_count_group_of_a_cached_group_it_does_not_know_is_none(q_cluster):
    q_cluster()
    async_task(f"{T}.add", 1, 1, cached=True, group="counted")
    get_pipeline().drain()
    assert count_group("counted", cached=True) == 1
    assert count_group("counted", failures=True, cached=True) == 0  # known, no failures
    delete_group("counted", cached=True)
    assert count_group("counted", cached=True) is None
    assert count_group("counted", failures=True, cached=True) is None
    assert count_group("never") == 0  # the result store counts as before

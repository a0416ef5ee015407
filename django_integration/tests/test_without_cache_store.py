"""Without qhive-store-cache (the extra ``qhive-django[cache]``), ``cached`` is an error
that says what to install: from ``manage.py check`` and from ``async_task`` itself, not
later in a worker. (``tests/test_install_like_a_user.py`` sees the same in a real venv.)"""

import pytest
from django.core.checks import run_checks
from qhive import drivers
from qhive.errors import UnknownDriverError
from qhive_django.tasks import async_iter, async_task, result

INSTALL = 'pip install "qhive-django[cache]"'


@pytest.fixture
def no_cache_store(monkeypatch):
    """The cache store's entry point is not there, as when the extra is not installed."""
    listed = drivers.entry_points

    def without_cache(group):
        return [ep for ep in listed(group)
                if not (group == "qhive.result_stores" and ep.name == "cache")]

    monkeypatch.setattr(drivers, "entry_points", without_cache)


def test_cached_in_q_cluster_is_a_check_error_naming_the_extra(q_cluster, no_cache_store):
    q_cluster(cached=60)
    [(code, message, hint)] = [(m.id, m.msg, m.hint) for m in run_checks(tags=["qhive"])]
    assert code == "qhive.E002"
    assert message.startswith("Q_CLUSTER['cached'] keeps results in the result store 'cache': "
                              "unknown result store 'cache'; installed: ")
    assert hint == INSTALL


def test_async_task_with_cached_fails_at_once_naming_the_extra(q_cluster, no_cache_store):
    q_cluster()
    for call in (lambda: async_task("math.floor", 2.5, cached=60),
                 lambda: async_iter("math.sqrt", [4], cached=True),
                 lambda: result("0" * 32, cached=True)):
        with pytest.raises(UnknownDriverError, match=r"unknown result store 'cache'.*") as caught:
            call()
        assert str(caught.value).endswith(f"Cached results (cached=...) go to it: {INSTALL}")


def test_without_cached_nothing_needs_it(q_cluster, no_cache_store):
    q_cluster()
    assert [m.id for m in run_checks(tags=["qhive"])] == []
    async_task("math.floor", 2.5)

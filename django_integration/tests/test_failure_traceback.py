"""A failure's traceback starts at the task's own frame, not at the hook machinery
(pluggy, qhive's and qhive_django's wrappers) that led to it."""

from qhive_django.conf import get_pipeline
from qhive_django.tasks import async_task, fetch

T = "qhive_testkit.tasks"


def test_a_failure_starts_with_the_task_frames(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.boom", "bad input")
    get_pipeline().drain()
    text = fetch(task_id).result
    frames = [line for line in text.splitlines() if line.startswith('  File "')]
    assert len(frames) == 1 and "qhive_testkit/tasks.py" in frames[0], text
    assert text.endswith("ValueError: bad input")


def test_a_task_called_wrongly_shows_the_call(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 1)
    get_pipeline().drain()
    text = fetch(task_id).result
    assert "qhive/builtin/hooks.py" in text and "pluggy" not in text, text
    assert "add() missing 1 required positional argument: 'b'" in text

"""The README's examples do what its prose says (issue 11, item 20)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_schedule_example_passes_the_task_no_stray_argument(django_project):
    """``schedule(func, *args, ...)``: every positional argument after ``func`` is an
    argument of the task. The README's Monday report and poll take none."""
    from qhive_django.models import Schedule

    [block] = [b for b in python_blocks(README.read_text())
               if "from qhive_django.tasks import schedule" in b]
    try:
        exec(compile(block, "README.md", "exec"), {})
        report = Schedule.objects.get(name="monday-report")
        assert (report.func, report.schedule_type, report.cron) == (
            "myapp.tasks.report", Schedule.CRON, "0 7 * * 1")
        assert tuple(report.args) == ()
        assert report.kwargs == {"q_options": {"timeout": 600}}  # options, not arguments
        poll = Schedule.objects.get(func="myapp.tasks.poll")
        assert (tuple(poll.args), poll.kwargs) == ((), {})
    finally:
        Schedule.objects.filter(func__in=["myapp.tasks.report", "myapp.tasks.poll"]).delete()

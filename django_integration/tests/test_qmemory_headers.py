"""``qmemory --workers`` on a terminal shows every column header in full (issue 11,
item 20): columns are as wide as their cells instead of an equal share of the
terminal, headers go on two lines (name, unit) when one is too wide, and the
columns that still do not fit are named in a note rather than cut."""

import io
import os
import re
import socket
import uuid

import blessed
import pytest
from qhive.cluster.stat import Stat as CoreStat
from qhive_django import monitor
from qhive_django.conf import get_pipeline

COLUMNS = ["Host", "Id", "Available (%)", "Available (MB)", "Total (MB)", "Sentinel (MB)",
           "Zygote (MB)", "Workers (MB)", "Worker #1 (MB)", "Worker #2 (MB)",
           "Worker #3 (MB)"]


def headers_shown(lines):
    """The headers of the screen: a name on the first line, with the unit on the
    second line at the same place when there are two header lines."""
    names = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    units = {}
    if lines[1].lstrip().startswith("(") or "  (" in lines[1]:
        units = {m.start(): m.group() for m in re.finditer(r"\S+", lines[1])}
    return [f"{name} {units[at]}" if at in units else name for at, name in names]


@pytest.mark.parametrize("width", [150, 80])
def test_qmemory_workers_headers_are_not_cut(q_cluster, monkeypatch, width):
    q = q_cluster()
    me = os.getpid()
    stat = CoreStat(uuid.uuid4().hex, q["name"], socket.gethostname(), me,
                    workers=[me, me, me])
    stat.save(get_pipeline().broker, q["name"], ttl=60)
    out = io.StringIO()
    term = blessed.Terminal(kind="xterm-256color", force_styling=True, stream=out)
    monkeypatch.setattr(blessed.Terminal, "width", property(lambda self: width))
    monkeypatch.setattr(monitor, "_terminal", lambda stream: term)

    monitor.memory(run_once=True, workers=True, stream=out)

    lines = [term.strip_seqs(line) for line in out.getvalue().splitlines()]
    shown = headers_shown(lines)
    note = next((line for line in lines if line.startswith("Not shown")), "")
    left_off = note.partition(": ")[2].split(", ") if note else []
    assert shown + left_off == COLUMNS, "\n".join(lines)
    assert all(len(line) <= width for line in lines[:3]), "\n".join(lines)
    assert stat.short_id in "\n".join(lines)

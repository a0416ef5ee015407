# ruff: noqa: RUF001  (the multiplication sign and en dash in the report are meant)
"""``results.json`` -> ``report.md``, ``ratios.png`` and the scaling charts.

Run by ``run.py`` at the end; ``python bench/report.py [RESULTS_DIR]`` (in the harness
venv: ``bench/.envs/harness/bin/python``) rewrites them from an existing ``results.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import scaling
from measure import percentile

BASELINE = "django-q2"
OURS = "qhive"
REDIS_STORE = "redis+redis-store"
BROKERS = ["orm-sqlite", "orm-postgres", "redis", REDIS_STORE, "sqs", "ironmq", "mongo",
           "disque"]
#: Django Q2's broker a qhive broker variant is compared with: it has no Redis result store.
DQ2_BROKER = {REDIS_STORE: "redis"}
#: The peers of the headline tables, on Redis; qhive's systems on Redis they are compared to.
HEADLINE_PEERS = {"huey": "Huey", "dramatiq": "Dramatiq"}
OURS_ON_REDIS = {"redis": "redis (results in PostgreSQL)",
                 REDIS_STORE: "redis+redis-store (results in Redis)"}
MB = 1024 * 1024


@dataclass
class Metric:
    key: str
    short: str
    title: str
    unit: str
    higher_is_better: bool
    value: Callable[[dict, dict], float | None]  # (run, meta) -> value
    digits: int = 1
    note: str = ""

    @property
    def better(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


def _get(run: dict, *path: str):
    for key in path:
        if not isinstance(run, dict) or key not in run:
            return None
        run = run[key]
    return run


def _rate(workload: str, key: str = "seconds") -> Callable[[dict, dict], float | None]:
    def value(run: dict, meta: dict) -> float | None:
        seconds = _get(run, workload, key)
        return meta["n"][workload if workload != "results" else "enqueue"] / seconds \
            if seconds else None
    return value


def _latency(workload: str, q: float) -> Callable[[dict, dict], float | None]:
    def value(run: dict, meta: dict) -> float | None:
        values = _get(run, workload, "latencies_ms")
        return percentile(values, q) if values else None
    return value


def _cpu(key: str) -> Callable[[dict, dict], float | None]:
    def value(run: dict, meta: dict) -> float | None:
        seconds = _get(run, "drain", key)
        return seconds * 1000 / meta["n"]["drain"] if seconds is not None else None
    return value


def _memory(kind: str, phase: str | None = None) -> Callable[[dict, dict], float | None]:
    def value(run: dict, meta: dict) -> float | None:
        if phase == "idle":
            found = _get(run, "idle_memory", kind)
            return found / MB if found else None
        phases = run.get("memory") or {}
        values = [v[kind] for v in phases.values() if v.get(kind)]
        return max(values) / MB if values else None
    return value


METRICS = [
    Metric("drain_rate", "drain", "Drain: enqueue n tasks, wait until the caller sees every "
           "result (n ÷ first enqueue → last result)", "tasks/s", True, _rate("drain"), 0),
    Metric("worker_rate", "worker rate", "Worker rate: n tasks queued first, cluster started "
           "after; steady rate from the first result seen to the last", "tasks/s", True,
           lambda run, meta: _get(run, "results", "rate"), 0),
    Metric("enqueue_rate", "enqueue", "Enqueue rate: n tasks from one process, no worker "
           "running", "tasks/s", True, _rate("enqueue"), 0),
    Metric("enqueue_busy_rate", "enqueue while draining", "Enqueue rate while the cluster "
           "works (the enqueue phase of the drain)", "tasks/s", True,
           _rate("drain", "enqueue_seconds"), 0),
    Metric("latency_p50", "latency p50", "Round-trip latency p50: sequential tasks on an idle "
           "cluster (enqueue one, wait for its result, repeat)", "ms", False,
           _latency("latency", 50), 1),
    Metric("latency_p95", "latency p95", "Round-trip latency p95", "ms", False,
           _latency("latency", 95), 1),
    Metric("latency_p99", "latency p99", "Round-trip latency p99", "ms", False,
           _latency("latency", 99), 1),
    Metric("idle_latency", "idle latency", "Latency after 5-6 s idle (median of 3 round trips)",
           "ms", False, _latency("idle_latency", 50), 1),
    Metric("cpu_per_task", "CPU/task", "CPU per task of the worker process tree (all its "
           "processes, exited ones included) over the drain", "ms", False, _cpu("cpu_seconds"), 2),
    Metric("server_cpu_per_task", "server CPU/task", "CPU per task of the servers (PostgreSQL / "
           "Redis processes, serving every client, the benchmark client included) over the "
           "drain", "ms", False, _cpu("server_cpu_seconds"), 2,
           note="measured only when the harness started the services"),
    Metric("peak_rss", "peak RSS", "Peak RSS of the whole worker tree (sum over its processes), "
           "from start through the drain", "MB", False, _memory("rss"), 1,
           note="pages shared between processes are counted once per process"),
    Metric("peak_pss", "peak PSS", "Peak PSS of the whole worker tree", "MB", False,
           _memory("pss"), 1, note="shared pages are split between the processes sharing them"),
    Metric("idle_pss", "idle PSS", "PSS of the idle cluster (2 s after its first result)", "MB",
           False, _memory("pss", "idle"), 1),
    Metric("first_result", "first result", "Start to first result: worker command started → "
           "result of one task seen by a client started at the same moment", "s", False,
           lambda run, meta: _get(run, "first_result", "seconds"), 2),
]
RATIO_KEYS = ["drain_rate", "worker_rate", "enqueue_rate", "latency_p50", "latency_p95",
              "idle_latency", "cpu_per_task", "server_cpu_per_task", "peak_rss", "peak_pss",
              "first_result"]


@dataclass
class Target:
    """One acceptance bound of issue #17 on qhive's system on ``broker``: on the median of
    ``key`` (``against`` None), or on its ratio to the median of the system ``against``
    (a label). At least ``bound`` for a higher-is-better metric, at most otherwise."""

    item: str
    broker: str
    key: str
    bound: float
    against: str | None = None
    against_name: str = ""


def _huey(key: str, bound: float) -> Target:
    return Target("1", REDIS_STORE, key, bound, "huey / redis", "Huey")


#: Issue #17's acceptance, items 1, 2 (item 3 per broker: targets_markdown; item 4 from
#: the scaling curves).
TARGETS = [
    _huey("drain_rate", 1.2), _huey("worker_rate", 1.2),
    Target("1", REDIS_STORE, "latency_p50", 1.0), Target("1", REDIS_STORE, "idle_latency", 2.0),
    _huey("cpu_per_task", 1.0), _huey("peak_pss", 1.0),
    Target("2", "redis", "drain_rate", 2500),
    Target("2", "orm-postgres", "drain_rate", 2000), Target("2", "orm-postgres", "latency_p50", 2),
    Target("2", "orm-sqlite", "drain_rate", 2500), Target("2", "orm-sqlite", "latency_p50", 3),
    Target("2", "orm-sqlite", "idle_latency", 20),
]
FIRST_RESULT_MAX = 0.3  # s, item 3, every broker
MEMORY_VS_DQ2_MAX = 0.6  # peak RSS and PSS ÷ Django Q2's, item 3
IO_IDEAL_MIN = (8, 0.9)  # item 4: 8 workers, ≥ 90 % of the ideal of scale_io


# --------------------------------------------------------------------------- numbers


def values(entry: dict, metric: Metric, meta: dict) -> list[float]:
    found = []
    for run in entry.get("runs", []):
        try:
            value = metric.value(run, meta)
        except (KeyError, TypeError, ZeroDivisionError):
            value = None
        if value is not None:
            found.append(value)
    return found


def summary(entry: dict, metric: Metric, meta: dict) -> dict | None:
    found = values(entry, metric, meta)
    if not found:
        return None
    return {"median": statistics.median(found), "min": min(found), "max": max(found),
            "count": len(found)}


def table_of(data: dict) -> dict[str, dict[str, dict | None]]:
    """label -> metric key -> summary."""
    meta = data["meta"]
    return {label: {m.key: summary(entry, m, meta) for m in METRICS}
            for label, entry in data["systems"].items() if not entry.get("skip")}


def ratio(table: dict, system: str, broker: str, key: str,
          baseline: str = BASELINE) -> float | None:
    """``system`` ÷ ``baseline`` on ``broker`` (Django Q2: on its broker of DQ2_BROKER)."""
    return ratio_of(table, f"{system} / {broker}", baseline_label(baseline, broker), key)


def baseline_label(baseline: str, broker: str) -> str:
    if baseline == BASELINE:
        broker = DQ2_BROKER.get(broker, broker)
    return f"{baseline} / {broker}"


def median(table: dict, label: str, key: str) -> float | None:
    found = (table.get(label) or {}).get(key)
    return found["median"] if found else None


def ratio_of(table: dict, ours: str, theirs: str, key: str) -> float | None:
    """The median of ``ours`` ÷ that of ``theirs`` (labels), or None."""
    a, b = median(table, ours, key), median(table, theirs, key)
    return a / b if a is not None and b else None


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if value < 100 else f"{value:,.0f}×"


def metric_row(metric: Metric, cells: list[str]) -> str:
    """One row of a ratio table: the metric, its direction, then ``cells``."""
    return (f"| {metric.short} ({metric.unit}) | "
            f"{'higher' if metric.higher_is_better else 'lower'} | " + " | ".join(cells) + " |")


def ratio_table(table: dict, system: str, baseline: str, brokers: list[str],
                headers: dict[str, str] | None = None) -> list[str]:
    """Markdown rows: ``system`` ÷ ``baseline`` on each of ``brokers``, per metric of
    RATIO_KEYS, each ratio with both medians; a column is headed by its broker, or by
    ``headers[broker]``."""
    return ratio_columns(table, [((headers or {}).get(b, b), f"{system} / {b}",
                                  baseline_label(baseline, b)) for b in brokers])


def ratio_columns(table: dict, columns: list[tuple[str, str, str]]) -> list[str]:
    """Markdown rows: one column per ``(header, ours, theirs)`` (system labels) with
    ours ÷ theirs per metric of RATIO_KEYS, each ratio with both medians."""
    metrics = {m.key: m for m in METRICS}
    lines = ["| metric | better | " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "---|" * (2 + len(columns))]
    for key in RATIO_KEYS:
        metric = metrics[key]
        cells = []
        for _, ours, theirs in columns:
            r = ratio_of(table, ours, theirs, key)
            cells.append(f"**{fmt_ratio(r)}** ({fmt(median(table, ours, key), metric.digits)} "
                         f"vs {fmt(median(table, theirs, key), metric.digits)} {metric.unit})"
                         if r is not None else "—")
        lines.append(metric_row(metric, cells))
    return lines


# --------------------------------------------------------------------------- markdown


def write(data: dict, out_dir: Path) -> None:
    table = table_of(data)
    try:
        charts = scaling.write_charts(data, out_dir)
    except Exception as exc:  # a report without a chart is still a report
        print(f"scaling charts not written: {exc}", file=sys.stderr)
        charts = []
    (out_dir / "report.md").write_text(markdown(data, table, charts))
    try:
        chart(data, table, out_dir / "ratios.png")
    except Exception as exc:
        print(f"chart not written: {exc}", file=sys.stderr)


def markdown(data: dict, table: dict, scaling_charts: list[str] | None = None) -> str:
    meta = data["meta"]
    metrics = {m.key: m for m in METRICS}
    lines: list[str] = []
    add = lines.append
    status = "complete" if meta.get("complete") else (
        "INTERRUPTED — partial" if meta.get("interrupted") else "INCOMPLETE — partial")
    add("# qhive benchmark: qhive against Django Q2 and the peers\n")
    argv = (" " + " ".join(meta["argv"])) if meta["argv"] else ""
    add(f"Run of {meta['started']} ({status}): `python3 bench/run.py{argv}` — "
        f"{meta['repeat']} repetition(s), n = {meta['n']['drain']} tasks for enqueue / drain / "
        f"worker rate, {meta['n']['latency']} round trips for latency; wall time "
        f"{meta.get('wall_seconds', 0) / 60:.1f} min.\n")
    add("Every number is the **median over the repetitions**, with the spread (min–max) in "
        "the tables below. Absolute numbers depend on the machine; the ratios against Django "
        "Q2 on the same broker, measured in the same run, much less. What each number means: "
        "`bench/README.md`.\n")
    if meta.get("error"):
        add(f"**The run failed:** {meta['error']}\n")
    states = {json.dumps(run.get("source"), sort_keys=True)
              for entry in data["systems"].values() for run in entry.get("runs", [])}
    source = meta.get("source") or {}
    if source:
        add(f"qhive code: commit `{source.get('commit')}` ({source.get('subject')})"
            + (f", with uncommitted changes (fingerprint {source['uncommitted']})"
               if source.get("uncommitted") else "") + ".\n")
    if len(states) > 1:
        add("**Warning: the repository changed during this run** (qhive is installed "
            "editable): its repetitions measured different code. Run again.\n")

    # headline: qhive vs Huey and Dramatiq on Redis
    lines += headline_peers(data, table)

    # ratios: qhive vs Django Q2
    brokers = [b for b in BROKERS
               if baseline_label(BASELINE, b) in table and f"{OURS} / {b}" in table]
    add("## qhive ÷ Django Q2, same broker, same run\n")
    if not brokers:
        add("*No broker with both qhive and Django Q2 in this run: no ratios.*\n")
    if brokers:
        add("Ratio of the medians (qhive's value divided by Django Q2's). Read each row with its "
            "direction: for a *higher is better* metric a ratio above 1 favours qhive, for a "
            "*lower is better* metric a ratio below 1 does."
            + (" Django Q2 has no Redis result store: qhive on redis+redis-store is compared "
               "with Django Q2 on redis (results in PostgreSQL)." if REDIS_STORE in brokers
               else "") + "\n")
        lines += ratio_table(table, OURS, BASELINE, brokers,
                             {REDIS_STORE: f"{REDIS_STORE} ÷ DQ2 redis"})
    add("")
    skipped = [(label, e["skip"]) for label, e in data["systems"].items() if e.get("skip")]
    for label, why in skipped:
        add(f"*{label}*: not measured — {why}.  ")
    if skipped:
        add("")

    # before/after: qhive against qhive at a git ref (run.py --baseline REF)
    for before in sorted({e["name"] for e in data["systems"].values()
                          if e["name"].startswith(f"{OURS}@")}):
        pairs = [b for b in BROKERS if f"{before} / {b}" in table and f"{OURS} / {b}" in table]
        if not pairs:
            continue
        add(f"## qhive ÷ {before} (before/after), same broker, same run\n")
        lines += ratio_table(table, OURS, before, pairs)
        add("")

    lines += targets_markdown(data, table)

    # peers against Django Q2 on Redis
    peers = [label for label, e in data["systems"].items()
             if e["broker"] == "redis" and e["name"] not in (OURS, BASELINE)
             and not e["name"].startswith(f"{OURS}@") and label in table]
    if peers and f"{BASELINE} / redis" in table:
        add("## Peers ÷ Django Q2 on Redis (for context)\n")
        add("| metric | better | " + " | ".join(data["systems"][p]["name"] for p in peers) + " |")
        add("|" + "---|" * (2 + len(peers)))
        for key in RATIO_KEYS:
            add(metric_row(metrics[key], [
                fmt_ratio(ratio(table, data["systems"][p]["name"], "redis", key)) for p in peers]))
        add("")

    add("![ratios](ratios.png)\n")
    lines += scaling.markdown(data, scaling_charts or [])

    # one table per metric
    add("## Results per metric\n")
    if any(e["broker"] == REDIS_STORE for e in data["systems"].values()):
        add(f"The last column of {REDIS_STORE} divides by {BASELINE} on redis ({BASELINE} "
            "has no Redis result store).\n")
    order = sorted(table, key=lambda label: (
        BROKERS.index(data["systems"][label]["broker"])
        if data["systems"][label]["broker"] in BROKERS else 9,
        {OURS: 0, BASELINE: 1}.get(data["systems"][label]["name"], 2), label))
    for metric in METRICS:
        rows = [(label, table[label][metric.key]) for label in order if table[label][metric.key]]
        if not rows:
            continue
        add(f"### {metric.title}\n")
        add(f"{metric.unit}, {metric.better}" + (f"; {metric.note}" if metric.note else "")
            + ".\n")
        add(f"| system | broker | median | min – max | runs | ÷ {BASELINE} same broker |")
        add("|---|---|---|---|---|---|")
        for label, s in rows:
            entry = data["systems"][label]
            r = None if entry["name"] == BASELINE else ratio(table, entry["name"], entry["broker"],
                                                              metric.key)
            add(f"| {entry['name']} | {entry['broker']} | {fmt(s['median'], metric.digits)} | "
                f"{fmt(s['min'], metric.digits)} – {fmt(s['max'], metric.digits)} | {s['count']} "
                f"| {fmt_ratio(r) if r is not None else ''} |")
        add("")

    # errors
    errors = [(label, run["rep"], error) for label, entry in data["systems"].items()
              for run in entry.get("runs", []) for error in run.get("errors", [])]
    if errors or meta.get("adapter_problems"):
        add("## Failures\n")
        for problem in meta.get("adapter_problems", []):
            add(f"* adapter not loaded: {problem}")
        for label, rep, error in errors:
            add(f"* {label}, repetition {rep}: {error}")
        add("")

    # time per system
    add("## Time taken\n")
    add("| system | wall time of its runs (all repetitions) |")
    add("|---|---|")
    for label in order:
        seconds = sum(run.get("wall_seconds", 0) for run in data["systems"][label]["runs"])
        add(f"| {label} | {seconds:.0f} s |")
    add("")

    # settings
    add("## Settings\n")
    add("Every system runs 2 worker processes on the same machine as the client and the "
        "servers, and stores results. The task: `def add(a, b): return a + b`. The scaling "
        "curves change the number of worker processes (the `2` below) and the task "
        "(`sleep_ms`, `size`).\n")
    for label, entry in data["systems"].items():
        add(f"* **{label}**" + (f" (not run: {entry['skip']})" if entry.get("skip") else "")
            + f": {entry.get('settings', '')}")
    add("")

    # machine and versions
    machine = meta["machine"]
    add("## Machine and versions\n")
    add(f"* CPU: {machine['cpu_model']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical); RAM {machine['memory_gib']} GiB")
    add(f"* OS: {machine['os']}; harness Python {machine['harness_python']}")
    for name, version in (meta.get("services") or {}).items():
        add(f"* {name}: {version}")
    harness = [(run["harness_cpu_seconds"], run["wall_seconds"])
               for entry in data["systems"].values() for run in entry.get("runs", [])
               if run.get("harness_cpu_seconds") is not None and run.get("wall_seconds")]
    if harness:
        share = sum(c for c, _ in harness) / sum(w for _, w in harness)
        add(f"* the harness itself (sampling, reading the clients) used {share:.0%} of one core "
            "on average while the systems ran")
    loads = [run.get("load_avg", [0])[0] for entry in data["systems"].values()
             for run in entry.get("runs", [])]
    if loads:
        add(f"* 1-minute load average at the start of each system's runs: "
            f"{min(loads):.2f} – {max(loads):.2f} (it still counts the previous run's processes; "
            "much more than 2 means other work on the machine)")
    add("")
    venvs = meta.get("venvs") or {}
    if venvs:
        add("| venv | Python | SQLite | key packages |")
        add("|---|---|---|---|")
        for name, facts in venvs.items():
            freeze = dict(line.split("==", 1) for line in facts.get("freeze", []) if "==" in line)
            keys = [p for p in freeze if p.lower().replace("_", "-") in KEY_PACKAGES]
            add(f"| {name} | {facts.get('python_version')} | {facts.get('sqlite')} | "
                + ", ".join(f"{p} {freeze[p]}" for p in keys) + " |")
        add("")
        for name, facts in venvs.items():
            add(f"<details><summary>pip freeze of venv {name}</summary>\n")
            add("```")
            lines.extend(facts.get("freeze", []))
            add("```\n</details>\n")
    return "\n".join(lines) + "\n"


def headline_peers(data: dict, table: dict) -> list[str]:
    """qhive ÷ Huey and qhive ÷ Dramatiq on Redis: a table per peer measured, a column per
    qhive system on Redis (results in PostgreSQL, results in Redis)."""
    lines: list[str] = []
    ours = [b for b in OURS_ON_REDIS if f"{OURS} / {b}" in table]
    for peer, title in HEADLINE_PEERS.items():
        theirs = f"{peer} / redis"
        if theirs not in table or not ours:
            continue
        lines.append(f"## qhive ÷ {title} on Redis, same run\n")
        lines.append(f"Ratio of the medians (qhive's value divided by {title}'s), both on the "
                     f"same Redis; {title} keeps its results in Redis. Read each row with its "
                     "direction, as below.\n")
        lines += ratio_columns(table, [(f"qhive / {OURS_ON_REDIS[b]}", f"{OURS} / {b}", theirs)
                                       for b in ours])
        lines.append("")
    return lines


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✅" if ok else "❌")


def _bound_text(metric: Metric, bound: float, against: str = "") -> str:
    sign = "≥" if metric.higher_is_better else "≤"
    if against:
        return f"{metric.short} {sign} {bound:g}× {against}"
    return f"{metric.short} {sign} {fmt(bound, 1 if bound < 10 else 0)} {metric.unit}"


def _check(metric: Metric, value: float | None, bound: float) -> bool | None:
    if value is None:
        return None
    return value >= bound if metric.higher_is_better else value <= bound


def targets_markdown(data: dict, table: dict) -> list[str]:
    """Issue #17's acceptance: a bound is marked only when both of its sides (qhive's
    system, and the peer or Django Q2 it is compared with) were measured in this run."""
    metrics = {m.key: m for m in METRICS}
    lines = ["## Targets of issue #17\n",
             f"Medians of this run ({data['meta']['repeat']} repetition(s)); the issue asks "
             "for a quiet machine and the median of 3. ✅/❌ only where both sides were "
             "measured. Items 5 (reliability tests) and 6 (before/after with profiles) are "
             "not measured here.\n",
             "| # | qhive on | target | measured | |", "|---|---|---|---|---|"]
    for target in TARGETS:
        metric = metrics[target.key]
        ours = f"{OURS} / {target.broker}"
        if target.against:
            value = ratio_of(table, ours, target.against, target.key)
            shown = (f"{fmt_ratio(value)} ({fmt(median(table, ours, target.key), metric.digits)}"
                     f" vs {fmt(median(table, target.against, target.key), metric.digits)} "
                     f"{metric.unit})" if value is not None else "not measured")
        else:
            value = median(table, ours, target.key)
            shown = (f"{fmt(value, metric.digits)} {metric.unit}" if value is not None
                     else "not measured")
        lines.append(f"| {target.item} | {target.broker} | "
                     f"{_bound_text(metric, target.bound, target.against_name)} | {shown} | "
                     f"{_mark(_check(metric, value, target.bound))} |")
    # item 4: 8 workers of the I/O curve
    workers, share = IO_IDEAL_MIN
    io = scaling.rates(data).get("scale_io", {})
    measured = [b for b in BROKERS if workers in io.get(f"{OURS} / {b}", {})]
    for broker in measured or [REDIS_STORE]:
        found = io.get(f"{OURS} / {broker}", {}).get(workers)
        ideal = workers * 1000 / scaling.SLEEP_MS
        shown = (f"{found['median'] / ideal:.0%} ({fmt(found['median'], 0)} tasks/s)" if found
                 else "not measured (`--scaling`)")
        lines.append(f"| 4 | {broker} | I/O 10 ms tasks, {workers} workers: drain ≥ {share:.0%} "
                     f"of {ideal:,.0f}/s | {shown} | "
                     f"{_mark(found['median'] >= share * ideal if found else None)} |")
    lines.append("")
    # item 3, per broker: start-up and memory against Django Q2's
    brokers = [b for b in BROKERS if f"{OURS} / {b}" in table or b in (
        "orm-sqlite", "orm-postgres", "redis", REDIS_STORE)]
    lines += [f"Item 3: first result ≤ {FIRST_RESULT_MAX} s on every broker; peak RSS and PSS "
              f"≤ {MEMORY_VS_DQ2_MAX}× Django Q2's ({REDIS_STORE}: Django Q2 on redis).\n",
              "| qhive on | first result | peak RSS ÷ Django Q2 | peak PSS ÷ Django Q2 |",
              "|---|---|---|---|"]
    for broker in brokers:
        ours = f"{OURS} / {broker}"
        first = median(table, ours, "first_result")
        ok = _check(metrics["first_result"], first, FIRST_RESULT_MAX)
        cells = [f"{fmt(first, 2)} s {_mark(ok)}" if first is not None else "not measured"]
        for key in ("peak_rss", "peak_pss"):
            r = ratio(table, OURS, broker, key)
            cells.append(f"{fmt_ratio(r)} {_mark(r <= MEMORY_VS_DQ2_MAX)}" if r is not None
                         else "— (Django Q2 has no such broker)" if broker == "disque"
                         else "not measured")
        lines.append(f"| {broker} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


KEY_PACKAGES = {"qhive", "qhive-django", "qhive-broker-orm", "qhive-store-orm",
                "qhive-broker-redis", "qhive-redis-client", "qhive-store-redis", "django",
                "django-q2",
                "django-picklefield", "psycopg", "psycopg-binary", "redis", "hiredis", "celery",
                "kombu", "billiard", "rq", "huey", "dramatiq"}


# --------------------------------------------------------------------------- chart


def chart(data: dict, table: dict, path: Path) -> None:
    """One panel per broker: how many times better than Django Q2 on that broker each
    system is (the ratio for higher-is-better metrics, its inverse otherwise), log scale,
    bars drawn from 1 so that worse-than-Django-Q2 bars point left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    keys = ["drain_rate", "worker_rate", "enqueue_rate", "latency_p50", "idle_latency",
            "cpu_per_task", "peak_rss", "peak_pss", "first_result"]
    metrics = {m.key: m for m in METRICS}
    panels = []
    for broker in BROKERS:
        if f"{BASELINE} / {broker}" not in table:
            continue
        names = sorted({e["name"] for label, e in data["systems"].items()
                        if e["broker"] == broker and e["name"] != BASELINE and label in table},
                       key=lambda n: (n != OURS, n))
        bars = {name: [(j, ratio(table, name, broker, key)) for j, key in enumerate(keys)]
                for name in names}
        bars = {name: [(j, r if metrics[keys[j]].higher_is_better else 1 / r)
                       for j, r in found if r] for name, found in bars.items()}
        bars = {name: found for name, found in bars.items() if found}
        if bars:
            panels.append((broker, bars))
    if not panels:
        return
    every = [x for _, bars in panels for found in bars.values() for _, x in found]
    low = min(0.5, min(every) / 1.5)
    high = max(2.0, max(every) * 1.8)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
             if low <= t <= high]
    colors = {"qhive": "#d9822b", "celery": "#4c72b0", "rq": "#55a868", "huey": "#8172b2",
              "dramatiq": "#c44e52"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.2, 5.2),
                             squeeze=False, sharey=True)
    for ax, (broker, bars) in zip(axes[0], panels, strict=True):
        height = 0.8 / len(bars)
        for i, (name, found) in enumerate(bars.items()):
            ys = [j + (i - (len(bars) - 1) / 2) * height for j, _ in found]
            xs = [x for _, x in found]
            ax.barh(ys, [x - 1 for x in xs], left=1, height=height * 0.9,
                    color=colors.get(name, "#937860"), label=name)
            if name == OURS:
                for y, x in zip(ys, xs, strict=True):
                    ax.text(x * (1.08 if x >= 1 else 1 / 1.08), y, f"{x:.2g}×", va="center",
                            ha="left" if x >= 1 else "right", fontsize=7)
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set_yticks(range(len(keys)), [metrics[k].short for k in keys], fontsize=8)
        ax.set_ylim(len(keys) - 0.5, -0.5)
        ax.set_title(broker, fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.supxlabel("times better than Django Q2 on the same broker (right of 1: better; "
                  "log scale)", fontsize=8)
    fig.suptitle(f"qhive (and peers) vs Django Q2 — median of {data['meta']['repeat']}, "
                 f"{data['meta']['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    write(json.loads((folder / "results.json").read_text()), folder)
    print(f"wrote {folder / 'report.md'} and {folder / 'ratios.png'}")

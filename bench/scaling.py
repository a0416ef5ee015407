# ruff: noqa: RUF001, RUF002  (the multiplication sign and en dash are meant)
"""The scaling curves: drain against the number of workers and against the payload size.

Three curves, each a workload name of ``run.py --workloads`` (``--scaling`` adds all three):

* ``scale_cpu`` — workers 1, 2, 4, 8; the CPU no-op ``add(i, i)``; n = the drain's n;
* ``scale_io`` — workers 1, 2, 4, 8; ``sleep_ms(10)``, I/O-bound; n = 500 per worker, so
  that a point takes 5 s at the ideal rate of workers × 100 tasks/s (the report gives the
  % of that ideal);
* ``scale_payload`` — 2 workers; ``size(data)`` with a str of 100 B, 10 KB and 1 MB; n =
  the drain's n, 200 for 1 MB.

Every point is a worker lifetime of its own (``run.py``: ``Runner.scaling``): a fresh
store and queue, the cluster started with that many workers, one round trip (the cluster
is up), then the drain — the same definition and client loop as the ``drain`` workload —
with the CPU of the worker tree; the cluster stopped. Standard library only, but for the
charts (matplotlib).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

CURVES = ("scale_cpu", "scale_io", "scale_payload")
WORKER_COUNTS = (1, 2, 4, 8)
SLEEP_MS = 10
PAYLOADS = (100, 10 * 1024, 1024 * 1024)
PAYLOAD_WORKERS = 2
IO_N_PER_WORKER = {"full": 500, "quick": 100}
BIG_PAYLOAD = 1024 * 1024
BIG_PAYLOAD_N = {"full": 200, "quick": 50}
#: The systems that get the curves when ``--systems`` does not say.
DEFAULT_SYSTEMS = "qhive/redis+redis-store,qhive/orm-sqlite,huey,django-q2/redis"
TITLES = {
    "scale_cpu": "Drain against workers — CPU no-op task (`add`)",
    "scale_io": f"Drain against workers — I/O task (`sleep_ms({SLEEP_MS})`)",
    "scale_payload": f"Drain against payload size — `size(data)`, {PAYLOAD_WORKERS} workers",
}


@dataclass(frozen=True)
class Point:
    """One point of a curve: ``x`` is the worker count, or the payload in bytes."""

    curve: str
    x: int
    workers: int
    task: str  # $BENCH_TASK of the client (bench/systems/workloads.py)
    n: int


def points(curve: str, n_drain: int, quick: bool) -> list[Point]:
    size = "quick" if quick else "full"
    if curve == "scale_cpu":
        return [Point(curve, w, w, "add", n_drain) for w in WORKER_COUNTS]
    if curve == "scale_io":
        return [Point(curve, w, w, f"sleep_ms:{SLEEP_MS}", IO_N_PER_WORKER[size] * w)
                for w in WORKER_COUNTS]
    if curve == "scale_payload":
        return [Point(curve, b, PAYLOAD_WORKERS, f"size:{b}",
                      min(n_drain, BIG_PAYLOAD_N[size]) if b >= BIG_PAYLOAD else n_drain)
                for b in PAYLOADS]
    raise ValueError(f"unknown scaling curve {curve!r} (known: {', '.join(CURVES)})")


def plan(curves: list[str], n_drain: int, quick: bool) -> dict[str, list[dict]]:
    """What the run measures, for results.json."""
    return {curve: [asdict(p) for p in points(curve, n_drain, quick)] for curve in curves}


def label_x(curve: str, x: int) -> str:
    if curve != "scale_payload":
        return f"{x} worker{'s' if x > 1 else ''}"
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if x >= size:
            return f"{x / size:g} {unit}"
    return f"{x} B"


# --------------------------------------------------------------------------- numbers


def rates(data: dict) -> dict[str, dict[str, dict[int, dict]]]:
    """curve -> system label -> x -> {median, min, max, count} of the drain rate (tasks/s)."""
    out: dict[str, dict[str, dict[int, dict]]] = {}
    for label, entry in data["systems"].items():
        for run in entry.get("runs", []):
            for curve, found in (run.get("scaling") or {}).items():
                for x, point in found.items():
                    if point.get("seconds"):
                        out.setdefault(curve, {}).setdefault(label, {}).setdefault(
                            int(x), []).append(point["n"] / point["seconds"])
    return {curve: {label: {x: {"median": statistics.median(v), "min": min(v), "max": max(v),
                                "count": len(v)} for x, v in sorted(xs.items())}
                    for label, xs in systems.items()}
            for curve, systems in out.items()}


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


# --------------------------------------------------------------------------- markdown


def markdown(data: dict, charts: list[str]) -> list[str]:
    """The report's section on the curves (nothing when none was measured)."""
    found = rates(data)
    if not found:
        return []
    plan_ = data["meta"].get("scaling") or {}
    lines = ["## Scaling curves\n",
             "Drain (tasks/s: n ÷ first enqueue → last result seen, as in `drain`) of each "
             "system with other worker counts and payloads, each point on a fresh cluster "
             "and store. Median over the repetitions" + (", min–max in brackets" if
                                                        data["meta"]["repeat"] > 1 else "")
             + ". `bench/README.md` says what each curve runs.\n"]
    for curve in CURVES:
        systems = found.get(curve)
        if not systems:
            continue
        xs = [p["x"] for p in plan_.get(curve, [])] or sorted(
            {x for values in systems.values() for x in values})
        ns = {p["x"]: p["n"] for p in plan_.get(curve, [])}
        lines.append(f"### {TITLES[curve]}\n")
        if curve == "scale_io":
            lines.append(f"Ideal: every worker always sleeping, workers × {1000 // SLEEP_MS} "
                         "tasks/s; the % is of that ideal.\n")
        lines.append("| system | " + " | ".join(
            label_x(curve, x) + (f" (n = {ns[x]:,})" if x in ns else "") for x in xs) + " |")
        lines.append("|---|" + "---|" * len(xs))
        for label, values in systems.items():
            cells = []
            for x in xs:
                s = values.get(x)
                if s is None:
                    cells.append("—")
                    continue
                cell = _fmt(s["median"])
                if s["count"] > 1:
                    cell += f" ({_fmt(s['min'])}–{_fmt(s['max'])})"
                if curve == "scale_io":
                    cell += f" · {s['median'] / (x * 1000 / SLEEP_MS):.0%}"
                cells.append(cell)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![{name}]({name})\n" for name in charts]
    return lines


# --------------------------------------------------------------------------- charts


def write_charts(data: dict, out_dir: Path) -> list[str]:
    """``scaling-workers.png`` (CPU and I/O curves) and ``scaling-payload.png``, when
    measured; returns the names written."""
    found = rates(data)
    written = []
    panels = [c for c in ("scale_cpu", "scale_io") if c in found]
    if panels:
        _chart(data, found, panels, out_dir / "scaling-workers.png")
        written.append("scaling-workers.png")
    if "scale_payload" in found:
        _chart(data, found, ["scale_payload"], out_dir / "scaling-payload.png")
        written.append("scaling-payload.png")
    return written


def _chart(data: dict, found: dict, curves: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    def plain(value: float, _pos: int) -> str:  # 1,000, not 10³; minor ticks 2 and 5 only
        return f"{value:,.0f}" if f"{value:.0e}"[0] in "125" else ""

    fig, axes = plt.subplots(1, len(curves), figsize=(5.6 * len(curves), 4.4), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=True):
        xs_all = sorted({x for values in found[curve].values() for x in values})
        for label, values in found[curve].items():
            xs = sorted(values)
            ys = [values[x]["median"] for x in xs]
            line = ax.plot(xs, ys, marker="o", label=label)[0]
            if any(values[x]["count"] > 1 for x in xs):
                ax.fill_between(xs, [values[x]["min"] for x in xs],
                                [values[x]["max"] for x in xs], color=line.get_color(),
                                alpha=0.15, linewidth=0)
        if curve == "scale_io":
            ax.plot(xs_all, [x * 1000 / SLEEP_MS for x in xs_all], linestyle="--",
                    color="gray", label=f"ideal (workers × {1000 // SLEEP_MS}/s)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(plain))
        ax.yaxis.set_minor_formatter(FuncFormatter(plain))
        ax.xaxis.set_major_locator(FixedLocator(xs_all))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _, c=curve: label_x(c, int(v)).replace(" workers", "").replace(
                " worker", "")))
        ax.set_xlabel("payload" if curve == "scale_payload" else "workers", fontsize=8)
        ax.set_ylabel("drain (tasks/s, log scale)", fontsize=8)
        ax.set_title(TITLES[curve].replace("`", ""), fontsize=9)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling — median of {data['meta']['repeat']}, {data['meta']['started']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

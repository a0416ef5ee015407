"""The benchmark: qhive against Django Q2 and the peers, side by side, in one run.

    python3 bench/run.py                      # everything, 3 repetitions (about 30 min)
    python3 bench/run.py --quick              # small n, 1 repetition, results in results/quick/
    python3 bench/run.py --systems qhive,django-q2 --workloads drain,latency
    python3 bench/run.py --use-running-services   # Redis 6379, PostgreSQL 5432

It makes its own venvs (``bench/.envs/``), starts its own Redis and PostgreSQL
(``bench/.services/``), runs every workload for every system, and writes
``results/results.json`` (raw numbers of every repetition), ``results/report.md`` and
``results/ratios.png``. See ``bench/README.md`` for what is measured and how.

Each repetition runs every system once, in turn (so slow drifts of a shared machine hit
all systems alike), and each system in two worker lifetimes:

A. fresh database, worker started, at once a client does one round trip (``first_result``:
   worker start -> result seen); then ``latency`` (200 round trips), ``idle_latency``
   and ``drain`` (CPU of the worker tree and memory measured here); worker stopped.
B. fresh database, ``enqueue`` with no worker running (enqueue rate); then a ``results``
   client, then the worker: worker rate on the pre-filled queue; worker stopped.

With ``--scaling`` (or the workloads ``scale_cpu``, ``scale_io``, ``scale_payload``) the
scaling curves follow, a worker lifetime per point: see ``scaling.py``.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import pkgutil
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import envs  # noqa: E402  (standard library only: usable before the bootstrap)
import scaling  # noqa: E402  (the same)

WORKLOADS = ["first_result", "latency", "idle_latency", "drain", "enqueue", "results"]
FULL_N = {"enqueue": 5000, "drain": 5000, "results": 5000, "latency": 200}
QUICK_N = {"enqueue": 300, "drain": 300, "results": 300, "latency": 30}
SETTLE = 2.0  # s of quiet after the first result, before latency is measured


def bootstrap() -> None:
    """Re-run this script in the harness venv (psutil, matplotlib, psycopg, redis)."""
    python = envs.venv_python("harness")
    if Path(sys.prefix).resolve() == (envs.ENVS_DIR / "harness").resolve():
        return
    envs.ensure_venv("harness", envs.HARNESS_REQUIREMENTS)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- discovery


def discover() -> tuple[list, list[str]]:
    """Every ``System`` of ``systems/`` and ``systems/peers/``; and modules that failed."""
    from systems.base import System

    found, problems, seen = [], [], set()
    for package in ("systems", "systems.peers"):
        folder = BENCH / Path(*package.split("."))
        if not (folder / "__init__.py").exists():
            continue
        for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
            if info.ispkg or info.name.startswith("_") or info.name in ("base", "workloads"):
                continue
            name = f"{package}.{info.name}"
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                problems.append(f"{name}: cannot import ({type(exc).__name__}: {exc})")
                continue
            systems = getattr(module, "SYSTEMS", None)
            if systems is None:
                systems = [cls() for cls in vars(module).values()
                           if isinstance(cls, type) and issubclass(cls, System)
                           and cls is not System and cls.__module__ == module.__name__]
            for system in systems:
                if system.label not in seen:
                    seen.add(system.label)
                    found.append(system)
    return found, problems


def select(systems: list, spec: str | None) -> list:
    """``--systems qhive,django-q2,celery`` or ``qhive/orm-*``: by name or name/broker."""
    if not spec:
        return systems
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    return [s for s in systems if any(
        fnmatch.fnmatch(s.name, p) or fnmatch.fnmatch(f"{s.name}/{s.broker}", p)
        for p in patterns)]


# --------------------------------------------------------------------------- one repetition


class Runner:
    def __init__(self, services, servers: dict, n: dict[str, int], workloads: list[str],
                 tmp: Path, logs: Path, curves: dict[str, list] | None = None) -> None:
        self.services = services
        self.servers = servers  # "redis"/"postgres" -> sampler of the server we started
        self.n = n
        self.workloads = workloads
        self.tmp = tmp
        self.logs = logs
        self.curves = curves or {}  # scaling curve -> its points (scaling.Point)

    def _client(self, system, workdir: Path, workload: str, n: int, logs: Path,
                task: str | None = None, tag: str = ""):
        from measure import Client

        argv, env = system.client_command(workdir, self.services, workload, n)
        if task:  # the task of a scaling curve (bench/systems/workloads.py: task_call)
            env = {**env, "BENCH_TASK": task}
        return Client(argv, env, workdir, logs / f"client-{workload}{tag}.log")

    def _client_timeout(self, workload: str, n: int) -> float:
        if workload == "idle_latency":
            return 300
        if workload == "latency":
            return 120 + n * 2
        return 180 + n * 0.15

    def _server_cpu(self, system) -> float | None:
        """CPU seconds so far of the servers ``system`` uses (None: none we started)."""
        used = [self.servers[name] for name in sorted(system.needs) if name in self.servers]
        return sum(sampler.cpu() for sampler in used) if used else None

    def repetition(self, system, rep: int, curves: bool = False) -> dict:
        """One repetition of ``system``: lifetimes A and B for the workloads wanted, then
        the scaling curves when ``curves``."""
        slug = f"{system.name}_{system.broker}"
        workdir = self.tmp / "work" / slug
        logs = self.logs / f"{slug}-rep{rep + 1}"
        workdir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        out: dict = {"rep": rep + 1, "load_avg": os.getloadavg(), "errors": []}
        harness_cpu = time.process_time()
        self._lifetimes(system, workdir, logs, out)
        if curves:
            for curve, points in self.curves.items():
                for point in points:
                    found = self._scaling_point(system, workdir, logs, point, out["errors"])
                    if found:
                        out.setdefault("scaling", {}).setdefault(curve, {})[
                            str(point.x)] = found
        # The harness's own CPU (sampling, reading clients): it shares the 2 cores too.
        out["harness_cpu_seconds"] = time.process_time() - harness_cpu
        return out

    def _scaling_point(self, system, workdir: Path, logs: Path, point,
                       errors: list[str]) -> dict | None:
        """One point of a scaling curve, on a cluster of its own: a round trip (it is
        up), then the drain of ``point.n`` tasks of ``point.task``."""
        from measure import RunFailed, Worker

        name = f"{point.curve}-{point.x}"
        worker = None
        out = {"workers": point.workers, "task": point.task, "n": point.n}
        try:
            system.prepare(workdir, self.services)
            argv, env = system.worker_command(workdir, self.services, workers=point.workers)
            worker = Worker(argv, env, workdir, logs / f"worker-{name}.log")
            probe = self._client(system, workdir, "latency", 1, logs, tag=f"-{name}")
            _outcome, at = probe.result(timeout=180)
            out["first_result"] = at - worker.started_at
            worker.sampler.phase("drain")
            cpu0, server0 = worker.sampler.cpu(), self._server_cpu(system)
            client = self._client(system, workdir, "drain", point.n, logs, task=point.task,
                                  tag=f"-{name}")
            outcome, _ = client.result(self._client_timeout("drain", point.n))
            cpu1, server1 = worker.sampler.cpu(), self._server_cpu(system)
            if not worker.alive():
                raise RunFailed(f"the worker exited during the drain (log: {worker.log_path})")
            out.update(outcome, cpu_seconds=cpu1 - cpu0)
            if server0 is not None:
                out["server_cpu_seconds"] = server1 - server0
            log(f"  {point.curve} {scaling.label_x(point.curve, point.x)}: {point.n} in "
                f"{outcome['seconds']:.2f} s ({point.n / outcome['seconds']:,.0f}/s)")
            return out
        except Exception as exc:
            errors.append(f"{name}: {_describe(exc)}")
            log(f"  FAILED ({name}): {_describe(exc)}")
            return None
        finally:
            if worker is not None:
                worker.stop()
                out["memory"] = {phase: {"rss": v[0], "pss": v[1]}
                                 for phase, v in worker.sampler.peaks.items()}

    def _lifetimes(self, system, workdir: Path, logs: Path, out: dict) -> None:
        """Lifetimes A and B (see the module docstring), for the workloads wanted."""
        from measure import RunFailed, Worker

        wanted = set(self.workloads)

        # --- lifetime A: first_result, latency, idle_latency, drain
        if wanted & {"first_result", "latency", "idle_latency", "drain"}:
            worker = None
            try:
                system.prepare(workdir, self.services)
                argv, env = system.worker_command(workdir, self.services)
                worker = Worker(argv, env, workdir, logs / "worker-A.log")
                probe = self._client(system, workdir, "latency", 1, logs)
                _outcome, at = probe.result(timeout=180)
                if "first_result" in wanted:
                    out["first_result"] = {"seconds": at - worker.started_at}
                    log(f"  first_result {at - worker.started_at:.2f} s")
                time.sleep(SETTLE)
                worker.sampler.phase("idle")
                worker.sampler.sample()  # one full sample (RSS and PSS) of the idle cluster
                rss, pss = worker.sampler.last
                out["idle_memory"] = {"rss": rss, "pss": pss}
                for workload in ("latency", "idle_latency"):
                    if workload not in wanted:
                        continue
                    n = self.n["latency"] if workload == "latency" else 3
                    client = self._client(system, workdir, workload, n, logs)
                    outcome, _ = client.result(self._client_timeout(workload, n))
                    out[workload] = outcome
                    lat = sorted(outcome["latencies_ms"])
                    log(f"  {workload}: median {lat[len(lat) // 2]:.1f} ms (n={len(lat)})")
                if "drain" in wanted:
                    n = self.n["drain"]
                    worker.sampler.phase("drain")
                    cpu0, server0 = worker.sampler.cpu(), self._server_cpu(system)
                    client = self._client(system, workdir, "drain", n, logs)
                    outcome, _ = client.result(self._client_timeout("drain", n))
                    cpu1, server1 = worker.sampler.cpu(), self._server_cpu(system)
                    if not worker.alive():
                        raise RunFailed("the worker exited during the drain "
                                        f"(log: {worker.log_path})")
                    outcome["cpu_seconds"] = cpu1 - cpu0
                    if server0 is not None:
                        outcome["server_cpu_seconds"] = server1 - server0
                    out["drain"] = outcome
                    log(f"  drain {n} in {outcome['seconds']:.2f} s "
                        f"({n / outcome['seconds']:,.0f}/s), enqueue "
                        f"{outcome['enqueue_seconds']:.2f} s, worker CPU "
                        f"{(cpu1 - cpu0) * 1000 / n:.2f} ms/task")
            except Exception as exc:
                out["errors"].append(f"lifetime A: {_describe(exc)}")
                log(f"  FAILED (A): {_describe(exc)}")
            finally:
                if worker is not None:
                    out["stop_A"] = worker.stop()
                    out["memory"] = {phase: {"rss": v[0], "pss": v[1]}
                                     for phase, v in worker.sampler.peaks.items()}
                    out["memory_samples"] = worker.sampler.samples

        # --- lifetime B: enqueue (no worker), then results (worker rate)
        if wanted & {"enqueue", "results"}:
            worker = None
            n = self.n["enqueue"]
            try:
                system.prepare(workdir, self.services)
                client = self._client(system, workdir, "enqueue", n, logs)
                outcome, _ = client.result(self._client_timeout("enqueue", n))
                out["enqueue"] = outcome
                log(f"  enqueue {n} in {outcome['seconds']:.2f} s "
                    f"({n / outcome['seconds']:,.0f}/s, no worker running)")
                if "results" in wanted:
                    client = self._client(system, workdir, "results", n, logs)
                    if client.wait_line("ready", 20) is None:
                        log("  (the results client printed no 'ready' line within 20 s)")
                    argv, env = system.worker_command(workdir, self.services)
                    worker = Worker(argv, env, workdir, logs / "worker-B.log")
                    outcome, at = client.result(self._client_timeout("results", n))
                    done = n - outcome.get("first_count", 0)
                    steady = outcome.get("steady_seconds") or 0
                    outcome["rate"] = done / steady if steady > 0 and done > 0 else None
                    outcome["from_worker_start_seconds"] = at - worker.started_at
                    out["results"] = outcome
                    rate = outcome["rate"]
                    log(f"  results: {n} done {at - worker.started_at:.2f} s after worker start"
                        + (f"; steady rate {rate:,.0f}/s" if rate else ""))
            except Exception as exc:
                out["errors"].append(f"lifetime B: {_describe(exc)}")
                log(f"  FAILED (B): {_describe(exc)}")
            finally:
                if worker is not None:
                    out["stop_B"] = worker.stop()


def _describe(exc: BaseException) -> str:
    from measure import RunFailed

    if isinstance(exc, RunFailed | RuntimeError):
        return str(exc)
    return "".join(traceback.format_exception_only(exc)).strip()


# --------------------------------------------------------------------------- facts


def machine() -> dict:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "harness_python": platform.python_version(),
        "hostname": platform.node(),
    }


def source_state() -> dict:
    """The repository's commit and a fingerprint of uncommitted changes to qhive's code:
    qhive is installed editable, so an edit during a run changes what is measured."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH.parent, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    import hashlib

    diff = git("diff", "HEAD", "--", "core", "django_integration", "plugins")
    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
            "subject": git("log", "-1", "--format=%s"),
            "uncommitted": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None}


def venv_facts(python: Path) -> dict:
    code = "import sys, sqlite3; print(sys.version.split()[0]); print(sqlite3.sqlite_version)"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    version, sqlite = out.stdout.split()
    return {"python_version": version, "sqlite": sqlite, "freeze": envs.freeze(python)}


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", help="comma-separated names or name/broker patterns "
                        "(qhive, django-q2, celery, rq, huey, dramatiq, qhive/orm-*); default all")
    parser.add_argument("--workloads", help=f"comma-separated, of: {', '.join(WORKLOADS)}; "
                        f"and the scaling curves {', '.join(scaling.CURVES)} ('scaling': "
                        "all three)")
    parser.add_argument("--scaling", action="store_true", help="also measure the scaling "
                        "curves (drain against workers 1-8 and payload size), for the systems "
                        f"of --systems, else for {scaling.DEFAULT_SYSTEMS}")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; 1 "
                        "with --quick)")
    parser.add_argument("--quick", action="store_true", help="small n (300 tasks, 30 round "
                        "trips), 1 repetition, results in results/quick/")
    parser.add_argument("--n", type=int, help="tasks for enqueue/drain/results (default 5000)")
    parser.add_argument("--use-running-services", action="store_true",
                        help="use Redis on 6379 and PostgreSQL on 5432 instead of starting them")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results, or "
                        "bench/results/quick with --quick)")
    parser.add_argument("--baseline", metavar="REF", help="also measure qhive as committed at "
                        "git REF, as system qhive@REF (select it: --systems 'qhive@*/redis')")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    return parser.parse_args()


def main() -> int:
    bootstrap()
    args = parse_args()
    import measure
    import report
    from services import ServiceManager

    began = time.monotonic()
    if args.baseline:  # read by systems/djangoq.py as discover() imports it
        os.environ["QHIVE_BENCH_BASELINE"] = args.baseline
    systems, problems = discover()
    for problem in problems:
        log(f"adapter not loaded: {problem}")
    if args.list:
        for system in systems:
            print(f"{system.label:34} {'skipped: ' + system.skip if system.skip else ''}")
        return 0
    selected = select(systems, args.systems)
    if not selected:
        log(f"no system matches --systems {args.systems!r}")
        return 2
    asked = WORKLOADS if not args.workloads else [w.strip() for w in args.workloads.split(",")]
    asked = [c for w in asked for c in (scaling.CURVES if w == "scaling" else [w])]
    if args.scaling:
        asked += [c for c in scaling.CURVES if c not in asked]
    unknown = set(asked) - set(WORKLOADS) - set(scaling.CURVES)
    if unknown:
        log(f"unknown workloads: {', '.join(sorted(unknown))} (known: {', '.join(WORKLOADS)}, "
            f"{', '.join(scaling.CURVES)}, scaling)")
        return 2
    workloads = [w for w in WORKLOADS if w in asked]
    curve_names = [c for c in scaling.CURVES if c in asked]
    # The curves: for the systems of --systems, else for a few (they take a while).
    curve_systems = {s.label for s in (selected if args.systems or not curve_names else
                                       select(selected, scaling.DEFAULT_SYSTEMS))}
    if not workloads:  # curves only: the systems that have none have nothing to do
        selected = [s for s in selected if s.label in curve_systems]
        if not selected:
            log(f"no system of {scaling.DEFAULT_SYSTEMS} selected for the scaling curves: "
                "name them with --systems")
            return 2
    n = dict(QUICK_N if args.quick else FULL_N)
    if args.n:
        n.update(enqueue=args.n, drain=args.n, results=args.n)
    curves = {c: scaling.points(c, n["drain"], args.quick) for c in curve_names}
    repeat = args.repeat or (1 if args.quick else 3)
    out_dir = args.out or (BENCH / "results" / ("quick" if args.quick else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Work directories and logs of this run: results/tmp/<start time>/ (the last 5 kept).
    tmp = BENCH / "results" / "tmp"
    for old in sorted(tmp.glob("2*"))[:-4]:
        shutil.rmtree(old, ignore_errors=True)
    tmp = tmp / time.strftime("%Y%m%d-%H%M%S")
    logs = tmp / "logs"

    runnable = [s for s in selected if not s.skip]
    data = {
        "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:],
                 "logs": str(logs.relative_to(BENCH)),
                 "repeat": repeat, "n": n, "quick": args.quick, "workloads": workloads,
                 "scaling": scaling.plan(curve_names, n["drain"], args.quick),
                 "scaling_systems": sorted(curve_systems & {s.label for s in selected}),
                 "machine": machine(), "adapter_problems": problems, "complete": False,
                 "source": source_state()},
        "systems": {},
    }
    for system in selected:
        data["systems"][system.label] = {"name": system.name, "broker": system.broker,
                                         "skip": system.skip, "runs": []}

    # SIGINT (Ctrl-C; also when started in the background, where it may be ignored),
    # SIGTERM and SIGHUP (unless ignored: nohup): the finally below stops everything
    # started, by pid.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _interrupt)
    manager = ServiceManager(args.use_running_services, log=log)
    venvs: dict[str, dict] = {}
    try:
        for system in runnable:
            if system.venv_name not in venvs:
                log(f"venv {system.venv_name} ...")
                python = envs.ensure_venv(system.venv_name, system.requirements, log=log)
                venvs[system.venv_name] = {"python": python, **venv_facts(python)}
            system.python = venvs[system.venv_name]["python"]
        needs = set().union(*(s.needs for s in runnable)) if runnable else set()
        services = manager.start(needs)
        data["meta"]["services"] = manager.versions(services)
        servers = {name: measure.TreeSampler([pid], memory=False)
                   for name, pid in manager.pids.items()}
        runner = Runner(services, servers, n, workloads, tmp, logs, curves)
        for system in runnable:
            entry = data["systems"][system.label]
            entry["venv"] = system.venv_name
            entry["python"] = venvs[system.venv_name]["python"].__str__()
        for rep in range(repeat):
            for system in runnable:
                log(f"{system.label}: repetition {rep + 1} of {repeat}")
                t0 = time.monotonic()
                source = source_state()
                run = runner.repetition(system, rep, curves=system.label in curve_systems)
                run["source"] = source
                run["wall_seconds"] = time.monotonic() - t0
                entry = data["systems"][system.label]
                entry["settings"] = system.settings_text
                entry["runs"].append(run)
                _save(data, venvs, tmp, began)  # progress; out_dir only gets complete runs
        data["meta"]["complete"] = True
    except KeyboardInterrupt:
        log("interrupted: stopping everything started, writing what was measured")
        data["meta"]["interrupted"] = True
    except Exception as exc:
        log(f"FAILED: {_describe(exc)}; stopping everything started")
        data["meta"]["error"] = _describe(exc)
        traceback.print_exc()
    finally:
        measure.stop_all()
        manager.stop()
    for system in selected:
        data["systems"][system.label].setdefault("settings", system.settings_text)
    # A partial run must not replace the committed numbers: it stays with its logs.
    target = out_dir if data["meta"]["complete"] else tmp
    _save(data, venvs, target, began)
    report.write(data, target)
    log(f"done in {(time.monotonic() - began) / 60:.1f} min: {target / 'report.md'}")
    return 0 if data["meta"]["complete"] else 1


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _save(data: dict, venvs: dict, out_dir: Path, began: float) -> None:
    data["meta"]["wall_seconds"] = time.monotonic() - began
    data["meta"]["venvs"] = {name: {k: (str(v) if k == "python" else v) for k, v in facts.items()}
                             for name, facts in venvs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""``qplugins``: what plugins are installed, and do they work.

``qplugins list`` reads packaging metadata only: nothing is imported, so a
broken plugin cannot break it. ``qplugins check`` imports every driver and
hook-only plugin, validates hooks and the config, and exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from qhive import drivers
from qhive.config import Config
from qhive.errors import ConfigError, QhiveError


@dataclasses.dataclass
class Row:
    kind: str
    name: str
    distribution: str | None
    version: str | None
    target: str
    status: str
    selected: bool
    error: str | None = None


def selected_names(config: Config) -> set[tuple[str, str]]:
    """(kind, name) of every driver ``config`` selects."""
    chosen = {
        ("broker", config.broker),
        ("result_store", config.result_store),
        ("serializer", config.serializer),
        ("signer", config.signer),
    }
    chosen.update(("reporter", name) for name in config.error_reporter)
    return chosen


def collect(config: Config, kind: str | None = None) -> list[Row]:
    """Rows for drivers and hook-only plugins, from metadata alone."""
    from qhive.plugins import PluginSettings

    chosen = selected_names(config)
    disabled = PluginSettings.resolve(config).disabled
    infos = drivers.list_drivers(kind)
    counts: dict[tuple[str, str], int] = {}
    for info in infos:
        counts[info.kind, info.name] = counts.get((info.kind, info.name), 0) + 1
    rows = [
        Row(i.kind, i.name, i.distribution, i.version, i.target,
            "conflict" if counts[i.kind, i.name] > 1 else "installed",
            (i.kind, i.name) in chosen)
        for i in infos
    ]
    if kind in (None, "plugin"):
        for ep in drivers.entry_points(drivers.PLUGIN_GROUP):
            info = drivers.describe(drivers.PLUGIN_GROUP, ep, "plugin")
            off = bool({ep.name, info.distribution} & disabled)
            rows.append(Row("plugin", ep.name, info.distribution, info.version, ep.value,
                            "disabled" if off else "installed", not off))
    return rows


def check(config: Config, rows: list[Row]) -> list[str]:
    """Import everything in ``rows`` and return the problems found (and mark the rows)."""
    from qhive.plugins import PluginSettings, QhivePluginManager

    problems = []
    for row in rows:
        if row.kind == "plugin":
            continue
        contract = drivers.KINDS[row.kind][1]
        try:
            obj = drivers.load_driver(row.kind, row.name)
            if isinstance(obj, type) and not issubclass(obj, contract):
                raise QhiveError(
                    f"{row.kind.replace('_', ' ')} {row.name!r} ({row.target}) does not "
                    f"subclass {contract.__module__}.{contract.__qualname__}"
                )
            row.status = "ok"
        except QhiveError as exc:
            row.status, row.error = "failed", str(exc)
            problems.append(str(exc))

    settings = dataclasses.replace(PluginSettings.resolve(config), strict=False)
    pm = QhivePluginManager(settings)
    pm.load_entrypoint_plugins()
    by_name = {s.name: s for s in pm.statuses}
    for row in rows:
        if row.kind == "plugin" and row.name in by_name:
            status = by_name[row.name]
            row.status, row.error = status.status, status.error
            if status.status == "failed":
                problems.append(f"plugin {row.name!r} from {row.distribution}: {status.error}")

    for kind, name in sorted(selected_names(config)):
        if not any(r.kind == kind and r.name == name for r in rows):
            try:
                drivers.load_driver(kind, name, pm.driver_registry)
            except QhiveError as exc:
                problems.append(f"selected by config: {exc}")
    for found in pm.hook.qhive_check_config(config=config):
        problems.extend(found or ())
    return problems


def load_config(path: str | None) -> Config:
    """A Config from a JSON file or a Python file defining ``Q_CLUSTER``."""
    if path is None:
        return Config()
    file = Path(path)
    if file.suffix == ".json":
        data = json.loads(file.read_text())
    else:
        data = runpy.run_path(str(file)).get("Q_CLUSTER")
        if data is None:
            raise ConfigError(f"{path} defines no Q_CLUSTER")
    return Config.from_dict(data)


def render(rows: list[Row], as_json: bool) -> str:
    if as_json:
        return json.dumps([dataclasses.asdict(r) for r in rows], indent=2)
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "TARGET", "STATUS", "SELECTED")
    table = [header] + [
        (r.kind, r.name, r.distribution or "-", r.version or "-", r.target, r.status,
         "yes" if r.selected else "")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def build_parser(prog: str = "qplugins") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("list", "list installed drivers and plugins (imports nothing)"),
        ("check", "import every driver and plugin and validate them; exit 1 on problems"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--kind", choices=[*drivers.KINDS, "plugin"])
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.add_argument("--config", help="JSON file, or Python file defining Q_CLUSTER")
    return parser


def run(args: argparse.Namespace, config: Config | None = None) -> int:
    """Run a parsed ``qplugins`` command; ``manage.py qplugins`` passes Django's config."""
    try:
        config = config or load_config(args.config)
    except QhiveError as exc:
        print(f"qplugins: {exc}", file=sys.stderr)
        return 2
    rows = collect(config, args.kind)
    problems = check(config, rows) if args.command == "check" else []
    print(render(rows, args.json))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

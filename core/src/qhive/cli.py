"""``qplugins``: what plugins are installed, and do they work.

``qplugins list`` reads packaging metadata only: nothing is imported, so a
broken plugin cannot break it. ``qplugins check`` imports every driver and
hook-only plugin, validates hooks and the config, and exits 1 on a problem.

The config that marks the SELECTED drivers comes from ``--config``, else from
the ``Q_CLUSTER`` of the settings module ``DJANGO_SETTINGS_MODULE`` names
(imported alone: Django is not set up, no app or plugin is imported). Without
either the column shows ``?`` and a line on stderr says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from qhive import drivers
from qhive.config import Config
from qhive.errors import ConfigError, QhiveError
from qhive.plugins import PluginSettings, QhivePluginManager


@dataclasses.dataclass
class Row:
    kind: str
    name: str
    distribution: str | None
    version: str | None
    target: str
    status: str
    selected: bool | None  # None: no config says
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


def collect(config: Config, kind: str | None = None, *, known: bool = True) -> list[Row]:
    """Rows for drivers and hook-only plugins, from metadata alone. ``known=False``:
    ``config`` is a stand-in, so no driver is marked selected or not."""
    chosen = selected_names(config)
    disabled = PluginSettings.resolve(config).disabled
    infos = drivers.list_drivers(kind) if kind != "plugin" else []
    counts: dict[tuple[str, str], int] = {}
    for info in infos:
        counts[info.kind, info.name] = counts.get((info.kind, info.name), 0) + 1
    rows = [
        Row(i.kind, i.name, i.distribution, i.version, i.target,
            "conflict" if counts[i.kind, i.name] > 1 else "installed",
            (i.kind, i.name) in chosen if known else None)
        for i in infos
    ]
    if kind in (None, "plugin"):
        for ep in drivers.entry_points(drivers.PLUGIN_GROUP):
            info = drivers.describe(drivers.PLUGIN_GROUP, ep, "plugin")
            off = bool({ep.name, info.distribution} & disabled)
            rows.append(Row("plugin", ep.name, info.distribution, info.version, ep.value,
                            "disabled" if off else "installed", not off if known else None))
    return rows


def check(config: Config, rows: list[Row]) -> list[str]:
    """Import everything in ``rows`` and return the problems found (and mark the rows)."""
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


class SettingsUnknown(Exception):
    """No config can be read: the reason, for the line under the table."""


def settings_config() -> Config:
    """The root cluster's config of the Django project ``DJANGO_SETTINGS_MODULE`` names,
    read from its settings module's ``Q_CLUSTER`` without setting Django up.

    :raises SettingsUnknown: no such variable, or its module cannot be imported.
    :raises ConfigError: its ``Q_CLUSTER`` is wrong.
    """
    name = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not name:
        raise SettingsUnknown("no --config and DJANGO_SETTINGS_MODULE is not set")
    try:
        settings = _import_settings(name)
    except Exception as exc:  # a settings module may raise anything (a missing env var...)
        raise SettingsUnknown(f"DJANGO_SETTINGS_MODULE {name!r} cannot be imported "
                              f"({type(exc).__name__}: {exc})") from exc
    try:
        return Config.from_dict(getattr(settings, "Q_CLUSTER", None))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in the settings {name!r})", key=exc.key) from exc


def _import_settings(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # A console script's path starts at its own folder, not at the project folder
        # manage.py runs from: look there too, as `python -m` would.
        cwd = os.getcwd()
        if exc.name != name.partition(".")[0] or cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(name)


def render(rows: list[Row], as_json: bool) -> str:
    if as_json:
        return json.dumps([dataclasses.asdict(r) for r in rows], indent=2)
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "TARGET", "STATUS", "SELECTED")
    table = [header] + [
        (r.kind, r.name, r.distribution or "-", r.version or "-", r.target, r.status,
         "?" if r.selected is None else "yes" if r.selected else "")
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
    unknown: str | None = None
    problems: list[str] = []
    if config is None:
        try:
            config = load_config(args.config) if args.config else settings_config()
        except SettingsUnknown as exc:
            unknown = str(exc)
        except QhiveError as exc:
            if args.config:
                print(f"qplugins: {exc}", file=sys.stderr)
                return 2
            unknown = str(exc)  # the project's Q_CLUSTER: still list what is installed
            if args.command == "check":
                problems.append(unknown)
    rows = collect(config or Config(), args.kind, known=unknown is None)
    if args.command == "check":
        problems += check(config or Config(), rows)
    print(render(rows, args.json))
    if unknown is not None:
        print(f"qplugins: SELECTED is unknown: {unknown}; pass --config (a JSON file, or a "
              f"Python file defining Q_CLUSTER) or run manage.py qplugins", file=sys.stderr)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(build_parser().parse_args(argv))
        sys.stdout.flush()  # a closed pipe shows here, where it can be handled
        return code
    except BrokenPipeError:
        # `qplugins list | head`: the reader is gone. Point stdout at devnull so that
        # the flush at exit fails no more (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``Q_CLUSTER['plugins']['prometheus']`` checked by the plugin's ``qhive_check_config``
hook, as Django's system checks run it (``qhive.E004``): one line per problem, naming
the key, the ``ALT_CLUSTERS`` entry's when it has ``plugins`` of its own; and the
options a cluster gets from good settings."""

from __future__ import annotations

import uuid

import pytest

KEY = "Q_CLUSTER['plugins']['prometheus']"


def problems(q_cluster: dict) -> list[tuple[str, str]]:
    from django.core.checks import run_checks
    from django.test import override_settings

    q = {"name": f"promcheck{uuid.uuid4().hex[:8]}", "orm": "default", **q_cluster}
    with override_settings(Q_CLUSTER=q):
        return [(m.id, m.msg) for m in run_checks(tags=["qhive"])]


@pytest.mark.parametrize("options, problem", [
    ({}, f"{KEY}['port'] is missing: the port to serve /metrics on, e.g. 9191 (0: any free "
         f"port, logged)"),
    ({"port": "9191"}, f"{KEY}['port'] must be a port number from 0 to 65535 (0: any free "
                       f"port), got '9191' (str)"),
    ({"port": 70000}, f"{KEY}['port'] must be a port number from 0 to 65535 (0: any free "
                      f"port), got 70000 (int)"),
    ({"port": True}, f"{KEY}['port'] must be a port number from 0 to 65535 (0: any free "
                     f"port), got True (bool)"),
    ({"port": 9191, "addr": ""}, f"{KEY}['addr'] must be an address to listen on, such as "
                                 f"'127.0.0.1' or '0.0.0.0', got '' (str)"),
    ({"port": 9191, "prot": 1}, f"unknown key 'prot' in {KEY} — did you mean 'port'?"),
    ({"port": 9191, "colour": 1},
     f"unknown key 'colour' in {KEY} (known: port, addr, run_buckets, wait_buckets)"),
    ({"port": 9191, "run_buckets": [1, 0.5]},
     f"{KEY}['run_buckets'] must be a list of increasing numbers of seconds > 0, such as "
     f"[0.1, 1, 10], got [1, 0.5]"),
    ({"port": 9191, "wait_buckets": []},
     f"{KEY}['wait_buckets'] must be a list of increasing numbers of seconds > 0, such as "
     f"[0.1, 1, 10], got []"),
    ({"port": 9191, "wait_buckets": [0, 1]},
     f"{KEY}['wait_buckets'] must be a list of increasing numbers of seconds > 0, such as "
     f"[0.1, 1, 10], got [0, 1]"),
], ids=["no-port", "port-str", "port-range", "port-bool", "addr", "typo", "unknown",
        "buckets-order", "buckets-empty", "buckets-zero"])
def test_a_bad_option_is_one_line_naming_its_key(django_project, options, problem):
    assert problems({"plugins": {"prometheus": options}}) == [
        ("qhive.E004", f"Prometheus metrics: {problem}")]


def test_an_alt_cluster_with_plugins_of_its_own_is_named(django_project):
    found = problems({"plugins": {"prometheus": {"port": 9191}}, "ALT_CLUSTERS": {
        "long": {"plugins": {"prometheus": {"port": -1}}},
        "short": {"workers": 1},  # the root's plugins: checked once, with the root
    }})
    assert found == [("qhive.E004", "Prometheus metrics: Q_CLUSTER['ALT_CLUSTERS']['long']"
                                    "['plugins']['prometheus']['port'] must be a port number "
                                    "from 0 to 65535 (0: any free port), got -1 (int)")]


def test_a_root_problem_inherited_by_an_alt_cluster_is_said_once(django_project):
    found = problems({"plugins": {"prometheus": {"port": -1}},
                      "ALT_CLUSTERS": {"short": {"workers": 1}}})
    assert [msg for _, msg in found] == [
        f"Prometheus metrics: {KEY}['port'] must be a port number from 0 to 65535 (0: any "
        f"free port), got -1 (int)"]


@pytest.mark.parametrize("plugins", [
    {},
    {"prometheus": {"port": 0}},
    {"prometheus": {"port": 9191, "addr": "::1", "run_buckets": [0.1, 1, float("inf")],
                    "wait_buckets": (1, 60)}},
])
def test_good_settings_have_no_problem(django_project, plugins):
    assert problems({"plugins": plugins}) == []


def test_the_options_a_cluster_gets():
    from qhive.config import Config
    from qhive_metrics_prometheus import options

    def read(plugins: dict, cluster: str | None = None):
        q = {"name": "root", "plugins": plugins,
             "ALT_CLUSTERS": {"long": {"plugins": {"prometheus": {"port": 2}}}}}
        return options.read(Config.from_dict(q, cluster=cluster, secret_key="k"))

    assert read({}) == (None, [])
    assert read({"prometheus": {"port": 0}}) == (options.Options(port=0), [])
    got, found = read({"prometheus": {"port": 9191, "addr": " 0.0.0.0 ",
                                      "run_buckets": [1, 2, float("inf")]}})
    assert found == [] and got is not None
    assert (got.addr, got.run_buckets, got.wait_buckets) == ("0.0.0.0", (1.0, 2.0),
                                                             options.WAIT_BUCKETS)
    assert got.addr == "0.0.0.0"
    assert read({"prometheus": {"port": 1}}, cluster="long") == (options.Options(port=2), [])

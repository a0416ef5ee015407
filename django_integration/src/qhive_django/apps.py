from __future__ import annotations

import logging
from collections.abc import Mapping

from django.apps import AppConfig
from django.conf import settings
from django.core.signals import setting_changed
from qhive.config import SETTINGS
from qhive.errors import QhiveError
from qhive.plugins import add_default_plugin

logger = logging.getLogger("qhive")

#: qhive_django's hook module, registered with every plugin manager of a Django process.
HOOKS = "qhive_django.hooks"


class QhiveConfig(AppConfig):
    name = "qhive_django"
    label = "qhive_django"
    default_auto_field = "django.db.models.BigAutoField"

    @property
    def verbose_name(self) -> str:
        """``Q_CLUSTER['label']``, read when the admin asks (a bad Q_CLUSTER is the checks' job)."""
        q_cluster = getattr(settings, "Q_CLUSTER", None)
        label = q_cluster.get("label") if isinstance(q_cluster, Mapping) else None
        return label if isinstance(label, str) and label else SETTINGS["label"].default

    def ready(self) -> None:
        # Django imports an app's modules once apps load; conf and checks read settings.
        from qhive_django import checks, conf

        checks.register()
        setting_changed.connect(conf.on_setting_changed, dispatch_uid="qhive_django.conf")
        # Every Django process (web, qcluster, workers that ran django.setup()) gets the
        # hooks that feed the Django signals, also after the manager is rebuilt.
        try:
            add_default_plugin(HOOKS)
            conf.plugin_manager()
        except QhiveError as exc:  # a broken plugin in strict mode: the checks report it
            logger.error("qhive: the plugin manager could not be built: %s", exc)

from django.apps import AppConfig
from qhive.plugins import add_default_plugin


class QhiveStoreOrmConfig(AppConfig):
    """The app holding the ``Task`` table (``qhive_task``) and its proxies."""

    name = "qhive_store_orm"
    label = "qhive_store_orm"
    verbose_name = "Task results"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        add_default_plugin("qhive_store_orm.hooks")  # Task rows for the task API

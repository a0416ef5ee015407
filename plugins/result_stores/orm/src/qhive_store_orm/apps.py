from django.apps import AppConfig


class QhiveStoreOrmConfig(AppConfig):
    """The app holding the ``Task`` table (``qhive_task``) and its proxies."""

    name = "qhive_store_orm"
    label = "qhive_store_orm"
    verbose_name = "Task results"
    default_auto_field = "django.db.models.BigAutoField"

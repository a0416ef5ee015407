from django.apps import AppConfig


class QhiveBrokerOrmConfig(AppConfig):
    """The ORM broker's app: the queue table and the statistics table."""

    name = "qhive_broker_orm"
    label = "qhive_broker_orm"
    verbose_name = "qhive ORM broker"
    default_auto_field = "django.db.models.BigAutoField"

"""Settings of the qhive demo: SQLite and qhive's defaults (the ORM broker and result store;
``QHIVE_DEMO_RESULT_STORE=redis``: the Redis result store, see ``run.py``).

The database lives in a throw-away folder — ``demo/.data/``, or ``$QHIVE_DEMO_DATA`` —
that ``run.py`` recreates on every run.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("QHIVE_DEMO_DATA") or BASE_DIR / ".data")

SECRET_KEY = "qhive-demo-not-secret-do-not-use-in-production"  # a demo key: never reuse it
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "qhive_django",
    "qhive_broker_orm",
    "qhive_store_orm",
]
# QHIVE_DEMO_RESULT_STORE=redis: results in Redis, and no ORM result store in the project.
RESULT_STORE = os.environ.get("QHIVE_DEMO_RESULT_STORE", "orm")
if RESULT_STORE != "orm":
    INSTALLED_APPS.remove("qhive_store_orm")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # WAL lets the demo enqueue while the cluster claims and saves (the ORM
        # broker's README recommends it for a busy SQLite queue).
        "OPTIONS": {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    },
}

# No broker key: the ORM broker on the default database, and the ORM result store.
Q_CLUSTER = {
    "name": "demo",
    "workers": 2,
    "timeout": 10,
    "save_limit": 0,  # keep every success (the default keeps the newest 250)
    "ack_failures": True,  # a failing demo task is done with, not redelivered after 'retry'
}
if RESULT_STORE == "redis":
    Q_CLUSTER["result_store"] = "redis"
    Q_CLUSTER["result_store_options"] = {  # not Q_CLUSTER["redis"]: that picks the broker
        "redis": os.environ.get("QHIVE_DEMO_REDIS", "redis://127.0.0.1:6379/0")}
    # Keys are prefixed by the project name: a name of its own keeps runs apart.
    Q_CLUSTER["name"] = os.environ.get("QHIVE_DEMO_NAME", "demo")

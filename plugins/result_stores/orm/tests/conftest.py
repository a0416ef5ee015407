from qhive_testkit.django_project import database, django_project  # noqa: F401

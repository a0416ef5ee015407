"""The test project really reaches every database it claims to."""

from django.db import connections


def test_database_answers(database):
    with connections[database].cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    assert connections[database].vendor == {"default": "sqlite", "postgres": "postgresql",
                                            "mysql": "mysql"}[database]

"""The Django project of ``make demo`` (see ``demo/run.py``)."""

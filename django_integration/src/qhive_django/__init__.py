"""The qhive Django app (settings, models, task API, management commands).

A stub until the walking-skeleton issue: importing it does no work.
"""

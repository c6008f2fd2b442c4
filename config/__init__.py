"""The Django project package.

The Celery app lives in config/celery.py and is not imported here, unlike
Celery's Django template: a gateway worker never sends or runs a task, and
importing Celery would add ~11 MiB to each one. `celery -A config worker` finds
the app in config.celery by itself.
"""

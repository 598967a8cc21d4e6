"""Job model, submission and status for the Celery + Redis queue."""

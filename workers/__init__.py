"""Celery app and GPU workers for the mkd job queue."""

"""The ``mkd`` command line: one module per command or command group (as celery)."""

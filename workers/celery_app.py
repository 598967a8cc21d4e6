"""The Celery app of the mkd queue: settings chosen against the known Celery traps.

- JSON only (``accept_content=['json']``): pickle would let anyone who can write to the
  broker run code; a message of any other content type is rejected and logged.
- ``acks_late`` + prefetch 1 + concurrency 1: a worker reserves exactly the one message it
  runs. Recovery of a dead worker is NOT left to Celery (a killed child is acked anyway,
  and ``task_reject_on_worker_lost`` re-queues without a cap): mkd's watchdog re-queues
  the stage with a capped attempt count (:mod:`workers.heartbeat`).
- ``visibility_timeout`` of 30 days in producer and worker alike, longer than any job, so
  Redis never re-delivers a running stage; a late re-delivery is dropped by the stage's
  lease token (:mod:`workers.tasks`).
- Results are not the record of a job (unknown ids would read PENDING): the job store is.
- The transport is :mod:`workers.transport` (kombu's Redis transport that drops junk
  instead of stopping the worker); ``rediss://`` URLs get their TLS options from the URL
  (:func:`mkdcore.jobs.broker.tls_options`) for the broker and the result backend alike.
"""

from __future__ import annotations

from celery import Celery

from mkdcore import settings
from mkdcore.jobs.broker import broker_url, tls_options

#: Longer than any training job; Redis re-delivers an unacked message only after this.
VISIBILITY_TIMEOUT_S = 30 * 24 * 3600
#: The queue every worker consumes (``mkd worker --queue`` / ``mkd submit --queue``).
DEFAULT_QUEUE = "mkd"
#: kombu transport class for ``redis://`` and ``rediss://`` (TLS comes from ``broker_use_ssl``).
TRANSPORT = "workers.transport:Transport"
#: Redis priority sub-queues (kombu: 0 is served first).
PRIORITY_STEPS = list(range(10))


def transport_options() -> dict:
    """Broker options shared by producers and workers (the timeout must match in both)."""
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "queue_order_strategy": "priority",
        "priority_steps": PRIORITY_STEPS,
        # A blackholed broker must not hang `mkd submit` or `mkd status`.
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "max_retries": 0,
    }


def make_app(url: str | None = None) -> Celery:
    """A configured app; ``url`` defaults to ``MKD_BROKER_URL`` or loopback Redis."""
    url = url or broker_url()
    app = Celery("mkd", broker=url, backend=url, include=["workers.tasks", "workers.heartbeat"])
    tls = tls_options(url)
    app.conf.update(
        broker_transport=TRANSPORT,
        broker_use_ssl=tls,
        redis_backend_use_ssl=tls,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_track_started=True,
        task_default_queue=DEFAULT_QUEUE,
        task_ignore_result=True,  # the job store is the record; no result keys piling up
        broker_transport_options=transport_options(),
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_disable_rate_limits=True,
        # The task's process (not the worker parent) spawns the stage; torch is never
        # imported in either, so CUDA is never initialised before a fork.
        worker_max_tasks_per_child=None,
    )
    return app


app = make_app(settings.BROKER_URL.get())

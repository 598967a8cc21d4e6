"""``mkd worker --events``: a real worker sends Celery task events (what Flower shows).

A Celery event receiver (the consumer Flower uses) listens on the real Redis; the worker
runs the first stage of a real job. Waits are on the events themselves.
"""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from tests.redis_fixtures import PY, REPO, queue, redis_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


class Listener(threading.Thread):
    """Collects ``(type, hostname, task name)`` of every event on the broker."""

    def __init__(self, app) -> None:
        super().__init__(daemon=True)
        self.app, self.events, self.ready = app, [], threading.Event()
        self.receiver = None

    def run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self._on})
            self.ready.set()
            try:
                self.receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception:  # the broker went away at teardown
                if not self.receiver.should_stop:
                    raise

    def _on(self, event: dict) -> None:
        self.events.append((event["type"], event.get("hostname"), event.get("name")))

    def seen(self, kind: str, host: str | None = None) -> bool:
        return any(t == kind and (host is None or h == host) for t, h, _ in list(self.events))


def test_worker_with_events_sends_task_started_and_succeeded(queue):
    from workers.celery_app import make_app

    q = queue
    listener = Listener(make_app(q.server.url))
    listener.start()
    assert listener.ready.wait(30)
    log = open(q.root / "worker-ev.log", "ab")
    proc = subprocess.Popen([PY, "-m", "mkdcore.cli.main", "worker", "--cpu", "--name", "ev", "--events"], cwd=REPO,
                            env=q.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    q.workers.append(proc)  # killed by the fixture
    node = f"ev-cpu@{socket.gethostname()}"
    wait_for(lambda: listener.seen("worker-online", node) or listener.seen("worker-heartbeat", node), 60,
             "the worker's first event (the receiver is subscribed)")
    q.submit(q.config())
    wait_for(lambda: listener.seen("task-succeeded", node), 90, "task-succeeded from the worker")
    kinds = [t for t, h, _ in listener.events if h == node]
    assert "task-received" in kinds and kinds.index("task-started") < kinds.index("task-succeeded")
    assert ("task-received", node, "mkd.run_stage") in listener.events
    listener.receiver.should_stop = True  # leaves at the worker's next event (its heartbeat)
    listener.join(30)


def test_without_events_flag_the_worker_sends_none():
    from mkdcore.cli.worker_cmd import celery_argv, worker_specs

    spec = worker_specs(None, cpu=True, queue="mkd", name="x")[0]
    assert "-E" not in celery_argv(spec, "INFO") and "-E" in celery_argv(spec, "INFO", events=True)

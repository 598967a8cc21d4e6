"""The queue survives junk and restarts; Redis with a password (and TLS) end to end.

Real redis-server and real `mkd worker` processes; stages are ``tests.queue_fake_stage``.
Each test starts one worker and checks several faults with it (workers are slow to start
on a busy machine).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import uuid

import pytest

from tests.redis_fixtures import Queue, RedisServer, _require_redis, make_tls_certs, queue, redis_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


def _envelope(body: str, headers=None, properties=None) -> str:
    """A kombu Redis message around ``body`` (JSON content type)."""
    props = {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()), "priority": 0, "delivery_mode": 2,
             "delivery_info": {"exchange": "", "routing_key": "mkd"}}
    return json.dumps({"body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": {} if headers is None else headers,
                       "properties": props if properties is None else properties})


#: What anyone who can write to Redis might push: each must be dropped (logged), none may stop a worker.
JUNK = [
    "x",                                                        # not JSON (kombu: JSONDecodeError)
    "[1, 2]", '"text"', '{"a": 1}', '{"properties": {}}',       # JSON, not a message envelope
    _envelope("not json", {"task": "mkd.run_stage", "id": "j1"}),  # body is not JSON (Celery on_decode_error)
    _envelope("[[], {}, {}]", {"task": "no.such.task", "id": "j2"}),  # unknown task (on_unknown_task)
    _envelope('[[], {"job_id": 5}, {}]', {"task": "mkd.run_stage", "id": "j3"}),  # bad arguments (mkd rejects)
    _envelope('"garbage"', {"task": "mkd.run_stage", "id": "j4"}),  # body not [args, kwargs, embed]
    _envelope("[[], {}, {}]", {"task": "mkd.run_stage"}),       # no task id
    _envelope("[[], {}, {}]", "not-a-dict"),                    # headers not a mapping
    _envelope("[[], {}, {}]", {"task": "mkd.run_stage", "id": "j5"}, {"delivery_tag": "t", "body_encoding": "rot13"}),
]


def _beat(q: Queue, node: str) -> dict:
    return json.loads((q.runs / "workers" / f"{node}.json").read_text())


def test_junk_is_dropped_and_a_killed_worker_is_restarted_and_requeues_its_stage(queue):
    import redis

    q = queue
    q.env["MKD_FAKE_HOLD"] = "teacher:rgb@5"  # the teacher holds after its first checkpoint (killed there)
    parent = q.start_worker("w1")
    node = f"w1-cpu@{socket.gethostname()}"
    celery_pid = _beat(q, node)["pid"]
    r = redis.Redis.from_url(q.server.url)
    for item in JUNK:
        r.lpush("mkd", item)
    wait_for(lambda: r.llen("mkd") == 0, 30, "the worker to pop every junk item")
    wait_for(lambda: q.worker_log("w1").count("dropped a malformed message") >= 9, 30, "the junk to be logged")
    log = q.worker_log("w1")
    assert "Unrecoverable error" not in log and "died (" not in log and _beat(q, node)["pid"] == celery_pid  # same worker
    assert r.hlen("unacked") == 0  # nothing left to be re-delivered
    assert q.runs_log() == []  # nothing ran

    # a real job still runs; kill -9 the Celery worker mid-stage: `mkd worker` restarts it under
    # the same node name and the new one re-queues the stage the dead one left "running"
    job = q.submit(q.config(teacher={"training": {"tasks": 10, "checkpoint_every": 5}}))[0]
    ckpt = lambda: os.path.join(q.store().load(job.id).stage("teacher:rgb").stage_dir, "checkpoints", "last.json")  # noqa: E731
    wait_for(lambda: os.path.isfile(ckpt()), 60, "a teacher checkpoint")
    os.kill(celery_pid, signal.SIGKILL)
    wait_for(lambda: _beat(q, node)["pid"] != celery_pid, 60, "the restarted worker's heartbeat")
    done = q.wait_state(job.id, ("succeeded", "failed"), timeout=120)
    assert done.state == "succeeded", [(s.name, s.state, s.message) for s in done.stages]
    teacher = done.stage("teacher:rgb")
    assert teacher.attempts == 2 and teacher.worker == node
    starts = [ln for ln in q.runs_log() if ln.startswith("teacher:rgb ") and " start " in ln]
    assert len(starts) == 2 and "from=0" not in starts[1]  # resumed from its checkpoint
    log = q.worker_log("w1")
    assert f"worker {node} died (killed by signal 9)" in log and "restarting" in log
    assert f"{job.id}/teacher:rgb requeued (worker {node} died (pid {celery_pid}) and was restarted)" in log
    assert parent.poll() is None  # the supervisor itself goes on

    # a clean stop (SIGTERM to `mkd worker`) is not restarted
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(60) == 0
    assert q.worker_log("w1").count("; restarting in") == 1


def test_junk_in_the_unacked_hash_is_removed_not_restored_forever(redis_server):
    """kombu restores unacked messages from a hash anyone can write; junk there is dropped."""
    import redis

    from workers.celery_app import make_app

    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.hset("unacked", "junk-tag", "not json")
    r.zadd("unacked_index", {"junk-tag": 0})
    with make_app(redis_server.url).connection_for_write() as conn:
        conn.default_channel.qos.restore_visible(num=10)  # what the worker's timer runs
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.llen("mkd") == 0


@pytest.fixture
def secure_queue(tmp_path):
    """A password-protected Redis, over TLS when this redis-server supports it."""
    _require_redis()
    (tmp_path / "redis").mkdir()
    certs = make_tls_certs(tmp_path / "certs")
    server = RedisServer(tmp_path / "redis", password="pw-Zq81x", tls=certs).start()
    (tmp_path / "q").mkdir()
    q = Queue(server, tmp_path / "q")
    yield q
    q.stop_workers()
    server.stop()


def test_password_and_tls_work_end_to_end_and_the_password_is_never_shown(secure_queue, monkeypatch):
    from mkdcore.testing import run_cli

    q = secure_queue
    secret = q.server.password
    if q.server.tls is None:
        print("redis-server without TLS support: password only")  # shown with -s; the TLS path is untested then
    q.start_worker("w1")
    job = q.submit(q.config())[0]
    done = q.wait_state(job.id, ("succeeded", "failed"), timeout=90)
    assert done.state == "succeeded", [(s.name, s.state, s.message) for s in done.stages]
    status = q.mkd("status")
    status_json = q.mkd("status", "--json")
    assert status.returncode == 0 and json.loads(status_json.stdout)["queue"] == {"mkd": 0}
    # in-process: doctor's torch and timm checks import nothing new in a test process that has them
    # already (a child would pay ~4 CPU-s for them); what is checked is its output
    monkeypatch.setenv("MKD_BROKER_URL", q.server.url)
    _, doctor_out, doctor_err = run_cli("doctor", "--json")
    assert "reachable at redis" in doctor_out and ":***@127.0.0.1" in doctor_out

    q.env["MKD_BROKER_URL"] = q.server.url.replace(secret, "wrong-pw")
    wrong = q.mkd("submit", str(q.config("again", training={"seed": 3})))
    assert wrong.returncode == 3
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Redis at redis") and ":***@127.0.0.1" in lines[0]
    shown = [status.stdout, status.stderr, status_json.stdout, doctor_out, doctor_err, wrong.stdout, wrong.stderr,
             q.worker_log("w1")]
    assert not [text for text in shown if secret in text or "wrong-pw" in text]

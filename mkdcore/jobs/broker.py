"""Where the broker is and whether it answers (without importing Celery)."""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

from mkdcore.errors import ServiceError

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


def broker_url(configured: str | None = None) -> str:
    """``MKD_BROKER_URL``, else the configured URL, else loopback Redis."""
    return os.environ.get("MKD_BROKER_URL") or configured or DEFAULT_BROKER_URL


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    parts = urlparse(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunparse(parts._replace(netloc=netloc))
    return url


def ping_redis(url: str, timeout: float = 1.0) -> None:
    """Raise :class:`ServiceError` (one line, what to do) unless Redis answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
    except Exception as exc:  # connection refused, auth error, DNS...
        raise ServiceError(
            f"cannot reach Redis at {redact(url)} ({type(exc).__name__}: {exc}); "
            "start Redis (`mkd up` or `redis-server --bind 127.0.0.1`), set MKD_BROKER_URL, or use `mkd run`"
        ) from None

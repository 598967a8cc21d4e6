"""Where the broker is, whether it answers, and how its URL is shown (without Celery).

The URL may carry a password (``redis://:PASSWORD@host:6379/0``) and TLS options
(``rediss://:PASSWORD@host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem``).
Every place that shows a URL or an error about it goes through :func:`redact` /
:func:`scrub`, so the password is never printed or logged.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mkdcore import settings
from mkdcore.errors import ServiceError

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
MASK = "***"

#: ``ssl_cert_reqs`` values accepted in a ``rediss://`` URL (kombu's, redis-py's and
#: Celery's spellings).
CERT_REQS = {
    "required": ssl.CERT_REQUIRED, "cert_required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL, "cert_optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE, "cert_none": ssl.CERT_NONE,
}


def broker_url(configured: str | None = None) -> str:
    """``MKD_BROKER_URL``, else the configured URL, else loopback Redis."""
    return settings.BROKER_URL.get() or configured or DEFAULT_BROKER_URL


def _password(url: str) -> str | None:
    """The password part of the URL as written (percent-encoded or not), if any."""
    netloc = urlsplit(url).netloc if "://" in url else ""
    userinfo, at, _ = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (never raises, whatever the URL)."""
    if _password(url) is None:
        return url
    netloc = urlsplit(url).netloc
    userinfo, _, hostport = netloc.rpartition("@")
    return url.replace(netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}", 1)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, a log line) with the URL's password masked."""
    secret = _password(url)
    if secret is None:
        return text
    for form in {secret, unquote(secret)}:
        if form:
            text = text.replace(form, MASK)
    return text


def tls_options(url: str) -> dict[str, Any] | None:
    """kombu/Celery SSL options for a ``rediss://`` URL (None for ``redis://``).

    ``ssl_cert_reqs`` defaults to ``required`` (kombu's own default for a bare ``rediss://``
    is to skip verification); ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` are paths.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    raw = query.get("ssl_cert_reqs", "required")
    try:
        reqs = CERT_REQS[raw.lower()]
    except KeyError:
        raise ServiceError(f"{redact(url)}: ssl_cert_reqs={raw!r}; expected required, optional or none") from None
    options: dict[str, Any] = {"ssl_cert_reqs": reqs}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(key):
            options[key] = query[key]
    return options


def ping_redis(url: str, timeout: float = 1.0) -> None:
    """Raise :class:`ServiceError` (one line, what to do) unless Redis answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
    except Exception as exc:  # connection refused, auth error, TLS, DNS...
        detail = scrub(" ".join(f"{type(exc).__name__}: {exc}".split()), url)
        raise ServiceError(
            f"cannot reach Redis at {redact(url)} ({detail}); "
            "start Redis (`mkd up` or `redis-server --bind 127.0.0.1`), set MKD_BROKER_URL, or use `mkd run`"
        ) from None

"""A worker's ``/healthz`` as the fault suite reads it (see :mod:`pipeline.worker_web`)."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson


def health(port: int, timeout: float = 5.0) -> tuple[str, list[str]]:
    """(``ok`` | ``failing`` | ``unreachable``, problems) of the worker on ``port``."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 carries the JSON too
        body = orjson.loads(exc.read())
    except OSError as exc:
        return "unreachable", [str(exc)]
    return str(body["status"]), [str(p) for p in body["problems"]]

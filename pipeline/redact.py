"""PII out of dead letters (pure): with hashing on, a rejected message must not keep the
clear emails and phone numbers its producer sent, in the dead-letter topic or table.

A dead letter keeps its payload (how a producer's bug is diagnosed), with every email and
phone replaced by its pseudonym, ``email:<hash>`` / ``phone:<hash>``: the keyed hash the
validate stage gives the same identifier (normalised first when it is valid, so a GDPR
forget finds the dead letter by the person's stored node). In a JSON payload the values of
``email`` and ``phone`` fields are replaced whatever their form, and clear-looking emails
and international phone numbers in any other string; a payload that is not JSON (or not
UTF-8) gets the pattern replacement over its text, other bytes unchanged (a JSON payload is
re-serialised). The error values and messages are treated the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.validate import PII_TYPES, ValidationConfig, hash_identifier
from schemas.events import Identifiers, ParseContext
from schemas.records import DeadLetter, FieldError

DOMAIN = re.compile(r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
"""An email's ``@domain``: matched from the ``@`` (a pattern starting with the local part
would retry at every character of a long run: quadratic on a 2 MB message)."""
LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
PHONE = re.compile(r"\+\d[\d ().-]{6,20}\d|\(\d{3}\) ?\d{3}[-. ]\d{4}")
"""International (``+``) numbers and ``(415) 555-0101``: bare digit runs are left alone
(they are timestamps, amounts and ids far more often than phone numbers)."""


@lru_cache(maxsize=65_536)
def _normal(kind: str, value: str, region: str) -> str | None:
    ctx = ParseContext(now=datetime.now(UTC), default_phone_region=region)
    try:
        return Identifiers.model_validate({kind: value}, context=ctx).as_dict().get(kind)
    except ValidationError:
        return None


def pseudonym(kind: str, value: str, cfg: ValidationConfig) -> str:
    """``kind:<hash>`` of ``value``, normalised as the validate stage does when it is valid."""
    normal = _normal(kind, value, cfg.phone_region)
    return f"{kind}:{hash_identifier(kind, normal or value.strip(), cfg.hash_key)}"


def _redact_emails(text: str, cfg: ValidationConfig) -> str:
    out, pos = [], 0
    for m in DOMAIN.finditer(text):
        start = m.start()
        while start > max(pos, m.start() - 64) and text[start - 1] in LOCAL:
            start -= 1
        if start == m.start():
            continue  # no local part: not an address
        out += [text[pos:start], pseudonym("email", text[start : m.end()], cfg)]
        pos = m.end()
    return "".join(out) + text[pos:] if out else text


def redact_text(text: str, cfg: ValidationConfig) -> str:
    if "@" in text:
        text = _redact_emails(text, cfg)
    return PHONE.sub(lambda m: pseudonym("phone", m.group(0), cfg), text)


def _walk(value: Any, cfg: ValidationConfig, kind: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, cfg, k if k in PII_TYPES else None) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, cfg) for v in value]
    if isinstance(value, str):
        return pseudonym(kind, value, cfg) if kind is not None else redact_text(value, cfg)
    return value


def redact_payload(raw: bytes, cfg: ValidationConfig) -> bytes:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", errors="surrogateescape")
        return redact_text(text, cfg).encode("utf-8", errors="surrogateescape")
    return orjson.dumps(_walk(parsed, cfg))


def _error(error: FieldError, cfg: ValidationConfig) -> FieldError:
    kind = error.path.rpartition(".")[2]
    value = pseudonym(kind, error.value, cfg) if kind in PII_TYPES else None
    return error.model_copy(
        update={
            "value": value or redact_text(error.value, cfg),
            "message": redact_text(error.message, cfg),
        }
    )


def redact_dead_letter(dl: DeadLetter, cfg: ValidationConfig) -> DeadLetter:
    """``dl`` without clear PII when hashing is on (as it is, when PII is kept in clear)."""
    if not cfg.hash_pii:
        return dl
    return dl.model_copy(
        update={
            "original": redact_payload(dl.original, cfg),
            "errors": tuple(_error(e, cfg) for e in dl.errors),
        }
    )

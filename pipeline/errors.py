"""One error hierarchy for the whole pipeline.

Every error names the stage it comes from and, where there is one, the offending value,
so a log line or a dead letter says what went wrong without a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_VALUE_CHARS = 200


def truncate(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """Render ``value`` for an error message, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TouchpointError(Exception):
    """Base of every error raised by touchpoint code."""

    stage: str = "touchpoint"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        if stage is not None:
            self.stage = stage
        super().__init__(f"[{self.stage}] {message}")


class ConfigError(TouchpointError):
    """Settings or a config file are wrong; raised at start, never mid-stream."""

    stage = "config"


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One problem with one field of an incoming event."""

    path: str
    message: str
    value: str

    def render(self) -> str:
        return f"{self.path}: {self.message} (got {self.value})"


class InvalidEvent(TouchpointError):
    """An incoming event broke the contract; it is dead-lettered, never dropped."""

    stage = "validate"

    def __init__(self, reason: str, issues: tuple[FieldIssue, ...]) -> None:
        self.reason = reason
        self.issues = issues
        detail = "; ".join(issue.render() for issue in issues) or reason
        super().__init__(f"{reason}: {detail}")


class StageFailure(TouchpointError):
    """A stage raised on a valid event: a bug. The event is dead-lettered with the stage."""

    def __init__(self, stage: str, event_id: str, cause: BaseException) -> None:
        self.cause = cause
        self.event_id = event_id
        super().__init__(
            f"{type(cause).__name__} while processing event_id={truncate(event_id)}: "
            f"{truncate(str(cause))}",
            stage=stage,
        )


class ClickHouseError(TouchpointError):
    """ClickHouse refused or could not be reached; keeps ClickHouse's numeric error code."""

    stage = "clickhouse"

    def __init__(self, message: str, *, code: int | None = None, stage: str | None = None) -> None:
        self.code = code
        prefix = f"Code {code}: " if code is not None else ""
        super().__init__(prefix + message, stage=stage)


class BrokerError(TouchpointError):
    """The Kafka broker could not be reached or refused a request."""

    stage = "broker"

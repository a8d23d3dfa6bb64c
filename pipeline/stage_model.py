"""The stage model: ordered journey stages and the rules that map events to them.

Read once at start from a TOML file (``pipeline/config/stages.toml`` is the shipped default;
its comments document the format). A bad file fails with :class:`ConfigError` naming the
file and the line. Rules are precompiled into dicts keyed by ``(channel, event_type)``.

``after_stage`` and ``repeat`` depend on the customer's history, not on the event alone: an
event whose matching rules use them is *gated* (see :mod:`pipeline.journey_history`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from operator import ge, le
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeGuard

from pipeline.errors import ConfigError
from pipeline.journey_history import EMPTY_HISTORY, Gated, Step, gate, history_of
from schemas.events import CHANNELS

if TYPE_CHECKING:
    from schemas.journey import JourneyState
    from schemas.records import Touchpoint

DEFAULT_PATH = Path(__file__).resolve().parent / "config" / "stages.toml"
OPERATORS = ("equals", "in", ">=", "<=")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_HEADER = re.compile(r"\s*\[\[?\s*([^\]\s]+)\s*\]")
_MISSING = object()

Test = Callable[[Mapping[str, Any]], bool]
Pair = tuple[str, str]
Timeouts = dict[str, timedelta | None]
Completes = dict[Pair, tuple[str, ...]]
At = tuple[str, int]
"""Where in the file: (table name, index among the tables of that name)."""


@dataclass(frozen=True, slots=True)
class Rule:
    stage: str
    where: tuple[Test, ...] = ()
    after_stage: str | None = None
    repeat: bool = False

    @property
    def gated(self) -> bool:
        return self.after_stage is not None or self.repeat


@dataclass(frozen=True, slots=True)
class StageModel:
    """A compiled stage model; :func:`load_stage_model` builds it from a file."""

    stages: tuple[str, ...]
    timeouts: Mapping[str, timedelta | None]
    inactivity_gap: timedelta
    rules: Mapping[Pair, tuple[Rule, ...]]
    """The rules of each (channel, event_type), in file order."""
    completes: Mapping[Pair, tuple[str, ...]]
    """The stages each (channel, event_type) completes (``completed_by``)."""
    source: str = "<memory>"
    rank: Mapping[str, int] = field(init=False)
    plain: Mapping[Pair, str] = field(init=False)
    repeat_pairs: frozenset[Pair] = field(init=False)
    """Pairs with a ``repeat`` rule: their first event is tracked."""
    after_targets: frozenset[str] = field(init=False)
    completed_stages: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        rules = [rule for chain in self.rules.values() for rule in chain]
        derived = {
            "rank": {stage: i for i, stage in enumerate(self.stages)},
            "plain": {
                k: c[0].stage for k, c in self.rules.items() if not c[0].where and not c[0].gated
            },
            "repeat_pairs": frozenset(k for k, c in self.rules.items() if any(r.repeat for r in c)),
            "after_targets": frozenset(r.after_stage for r in rules if r.after_stage),
            "completed_stages": frozenset(s for v in self.completes.values() for s in v),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def classify(self, pair: Pair, properties: Mapping[str, Any]) -> str | Gated | None:
        """The stage of a (channel, event_type) event, :class:`Gated` when it depends on the
        history, or None."""
        stage = self.plain.get(pair)
        if stage is not None:
            return stage
        steps: list[Step] = []
        for rule in self.rules.get(pair, ()):
            for test in rule.where:
                if not test(properties):
                    break
            else:
                if not rule.gated:
                    return Gated(tuple(steps), rule.stage) if steps else rule.stage
                steps.append((rule.stage, rule.after_stage or "", rule.repeat))
        return Gated(tuple(steps), None) if steps else None

    def stage_of(self, tp: Touchpoint, state: JourneyState | None) -> str | None:
        """The stage ``tp`` maps to, given its customer's state (None: a new customer)."""
        found = self.classify((tp.channel, tp.event_type), tp.properties)
        if not isinstance(found, Gated):
            return found
        history = EMPTY_HISTORY if state is None else history_of(state, self)
        kind = f"{tp.channel}/{tp.event_type}"
        return gate(found.steps, found.fallback, kind, tp.occurred_at, tp.event_id, history)


def load_stage_model(path: str | Path | None = None) -> StageModel:
    """Read, validate and compile the stage model at ``path`` (None: the shipped default)."""
    source = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the stage model: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        head, _, where = str(exc).rpartition(" (at ")
        raise ConfigError(f"{source}, {where.rstrip(')')}: {head}") from exc
    return _Parser(str(source), text).model(data)


class _Parser:
    """Semantic checks; an error names the line of the offending key (found in the text)."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = [line.split("#", 1)[0] for line in text.splitlines()]
        self.headers = [
            (m[1], no) for no, line in enumerate(self.lines, 1) if (m := _HEADER.match(line))
        ]

    def line(self, at: At, key: str, value: str) -> int:
        """The line of ``value`` (quoted) or else ``key`` in table ``at``, else its header."""
        starts = [no for name, no in self.headers if name == at[0]] or [0]
        start = starts[min(at[1], len(starts) - 1)]
        end = next((no for _, no in self.headers if no > start), len(self.lines) + 1)
        pattern = re.compile(rf'(^|[\s{{,.])"?{re.escape(key)}"?\s*[=.]')
        found = [no for no in range(start + 1, end) if value and f'"{value}"' in self.lines[no - 1]]
        found += [no for no in range(start + 1, end) if key and pattern.search(self.lines[no - 1])]
        return found[0] if found else max(start, 1)

    def fail(self, message: str, at: At, key: str = "", value: str = "") -> NoReturn:
        raise ConfigError(f"{self.source}, line {self.line(at, key, value)}: {message}")

    def model(self, data: dict[str, Any]) -> StageModel:
        for key in data:
            if key not in ("journey", "stage", "rule"):
                at = (key, 0) if any(name == key for name, _ in self.headers) else ("", 0)
                self.fail(f"unknown key {key!r} (expected journey, stage, rule)", at, key)
        journey = self.table(data.get("journey", {}), ("inactivity_gap",), ("journey", 0))
        gap = self.duration(journey.get("inactivity_gap", "30d"), ("journey", 0), "inactivity_gap")
        stages, timeouts, completes = self.stages(self.tables(data.get("stage"), "stage"))
        rules = self.rules(self.tables(data.get("rule", []), "rule"), stages)
        return StageModel(stages, timeouts, gap, rules, completes, self.source)

    def tables(self, raw: object, name: str) -> list[Any]:
        if not isinstance(raw, list) or not raw:
            self.fail(f"at least one [[{name}]] table is needed", (name, 0), name)
        return raw

    def table(self, raw: object, allowed: tuple[str, ...], at: At) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(f"{at[0]!r} must be a table ([{at[0]}] or [[{at[0]}]])", at, at[0])
        for key in raw:
            if key not in allowed:
                self.fail(
                    f"unknown key {key!r} in [{at[0]}] (allowed: {', '.join(allowed)})", at, key
                )
        return raw

    def duration(self, value: object, at: At, key: str) -> timedelta:
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None or float(match[1]) <= 0:
            self.fail(f'bad duration {value!r} for {key} (e.g. "30m", "7d")', at, key)
        return timedelta(seconds=float(match[1]) * _UNITS[match[2]])

    def strings(self, value: object, at: At, key: str) -> list[str]:
        if (
            not isinstance(value, list)
            or not value
            or not all(v and isinstance(v, str) for v in value)
        ):
            self.fail(f"{key} must be a non-empty list of non-empty strings", at, key)
        return value

    def choice(self, value: object, allowed: tuple[str, ...], noun: str, at: At, key: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            self.fail(f"{key} = {value!r}: unknown {noun} (known: {', '.join(allowed)})", at, key)
        return value

    def stages(self, raw: list[Any]) -> tuple[tuple[str, ...], Timeouts, Completes]:
        names: list[str] = []
        timeouts: Timeouts = {}
        completes: Completes = {}
        for i, raw_table in enumerate(raw):
            at = ("stage", i)
            table = self.table(raw_table, ("name", "timeout", "completed_by"), at)
            name = table.get("name")
            if not isinstance(name, str) or not name or name in names:
                self.fail(f"a stage needs a unique name, not {name!r}", at, "name")
            names.append(name)
            timeout = table.get("timeout", "none")
            timeouts[name] = None if timeout == "none" else self.duration(timeout, at, "timeout")
            kinds = table.get("completed_by")
            for kind in [] if kinds is None else self.strings(kinds, at, "completed_by"):
                pair = self.pair(kind, at)
                completes[pair] = (*completes.get(pair, ()), name)
        return tuple(names), timeouts, completes

    def pair(self, kind: str, at: At) -> Pair:
        channel, _, event_type = kind.partition("/")
        if channel not in CHANNELS or not event_type:
            self.fail(
                f"{kind!r} is not channel/event_type (channels: {', '.join(CHANNELS)})",
                at,
                "",
                kind,
            )
        return channel, event_type

    def rules(self, raw: list[Any], stages: tuple[str, ...]) -> dict[Pair, tuple[Rule, ...]]:
        chains: dict[Pair, tuple[Rule, ...]] = {}
        allowed = ("stage", "channel", "events", "where", "after_stage", "repeat")
        for i, raw_table in enumerate(raw):
            table = self.table(raw_table, allowed, ("rule", i))
            rule = self.rule(table, stages, ("rule", i))
            channel = self.choice(table.get("channel"), CHANNELS, "channel", ("rule", i), "channel")
            for event_type in self.strings(table.get("events"), ("rule", i), "events"):
                chains[channel, event_type] = (*chains.get((channel, event_type), ()), rule)
        return chains

    def rule(self, table: dict[str, Any], stages: tuple[str, ...], at: At) -> Rule:
        stage = self.choice(table.get("stage"), stages, "stage", at, "stage")
        after = table.get("after_stage")
        if after is not None:
            self.choice(after, stages[: stages.index(stage)], "earlier stage", at, "after_stage")
        repeat = table.get("repeat", False)
        if not isinstance(repeat, bool):
            self.fail(f"repeat must be true or false, not {repeat!r}", at, "repeat")
        where = table.get("where", {})
        if not isinstance(where, dict):
            self.fail("where must be a table: { property = condition }", at, "where")
        tests = [
            self.test(prop, op, value, at)
            for prop, spec in where.items()
            for op, value in (spec.items() if isinstance(spec, dict) else [("equals", spec)])
        ]
        return Rule(stage, tuple(tests), after, repeat)

    def test(self, prop: str, op: str, value: Any, at: At) -> Test:
        if op == "equals" and _scalar(value):
            return _one_of(prop, (value,))
        if op == "in" and isinstance(value, list) and value and all(map(_scalar, value)):
            return _one_of(prop, tuple(value))
        if op in (">=", "<=") and _number(value):
            return _bound(prop, ge if op == ">=" else le, value)
        if op not in OPERATORS:
            self.fail(f"unknown operator {op!r} (known: {', '.join(OPERATORS)})", at, op)
        self.fail(f"bad value {value!r} for {op!r} on {prop!r}", at, prop)


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _one_of(prop: str, values: tuple[Any, ...]) -> Test:
    """Equal to one of ``values``; a bool never equals a number."""
    flags = tuple(isinstance(v, bool) for v in values)

    def test(props: Mapping[str, Any]) -> bool:
        got = props.get(prop, _MISSING)
        is_bool = isinstance(got, bool)
        return any(got == v and is_bool is f for v, f in zip(values, flags, strict=True))

    return test


def _bound(prop: str, compare: Callable[[float, float], bool], bound: float) -> Test:
    """A number compared to ``bound`` (``>=`` or ``<=``); anything else fails."""

    def test(props: Mapping[str, Any]) -> bool:
        got = props.get(prop)
        return _number(got) and compare(got, bound)

    return test

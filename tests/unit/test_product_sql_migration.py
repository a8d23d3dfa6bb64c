"""Migration 0007 (SQL for product teams) and docs/sql.md without a server: the statements
split as migrate applies them, stage_timeouts equals the shipped stage model, every view is
documented, and every documented example is named and runnable as written."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pipeline.migrate import load_migrations
from pipeline.stage_model import load_stage_model

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "sql.md").read_text()
VIEWS = (
    "stage_timeouts", "journey_touchpoints", "purchases", "attribution_touches",
    "purchase_touches", "purchase_touches_time_decay", "attribution", "journey_paths",
    "top_stage_paths", "top_touch_paths", "retention_cohorts",
)  # fmt: skip


def _migration() -> list[str]:
    (found,) = [m for m in load_migrations() if m.name == "product_sql"]
    assert found.version == 7
    return found.statements()


def test_the_migration_creates_each_view_once_and_nothing_else() -> None:
    statements = _migration()
    names = [re.match(r"CREATE VIEW IF NOT EXISTS (\w+) AS\b", s) for s in statements]
    assert all(names), [s[:60] for s, n in zip(statements, names, strict=True) if not n]
    assert tuple(n.group(1) for n in names if n) == VIEWS
    assert all(";" not in s for s in statements)


def test_stage_timeouts_equal_the_shipped_stage_model() -> None:
    (sql,) = [s for s in _migration() if s.startswith("CREATE VIEW IF NOT EXISTS stage_timeouts")]
    rows = re.findall(r"\('(\w+)', (\d+), (\d+|NULL)\)", sql)
    model = load_stage_model()
    assert [name for name, _, _ in rows] == list(model.stages)
    assert [int(rank) for _, rank, _ in rows] == list(range(1, len(model.stages) + 1))
    for name, _, seconds in rows:
        timeout = model.timeouts[name]
        assert (None if seconds == "NULL" else timedelta(seconds=int(seconds))) == timeout, name


def test_every_view_has_a_section_in_the_docs() -> None:
    headings = {name for line in re.findall(r"^### (.*)$", DOCS, re.M)
                for name in re.findall(r"`(\w+)", line)}  # fmt: skip
    assert set(VIEWS) <= headings, set(VIEWS) - headings


def test_every_example_is_named_once_and_binds_only_the_params_it_declares() -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DOCS, re.S)
    names = [re.search(r"^-- example: (\w+)$", b, re.M) for b in blocks]
    assert all(names) and len({n.group(1) for n in names if n}) == len(blocks) >= 20
    for block in blocks:
        line = re.search(r"^-- params: (.*)$", block, re.M)
        declared = {kv.split("=", 1)[0] for kv in line.group(1).split()} if line else set()
        used = set(re.findall(r"\{(\w+):\w+\}", block))
        assert used == declared, block[:80]
        assert ";" not in block.replace("';'", "")  # one statement, runnable as it is

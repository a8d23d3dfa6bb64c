"""Generate ``docs/configuration.md`` from the settings model, so the docs cannot drift.

``python -m pipeline.settings_doc`` rewrites it; a unit test fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr

from pipeline.settings import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
HEADER = """# Configuration

Every setting is an environment variable with the prefix `TOUCHPOINT_`. Any of them can also be
given as `TOUCHPOINT_<NAME>_FILE=/path/to/file` (the file holds the value: use it for secrets).
Command-line flags override both, and `--help` of each command names the variable of each flag.
Lists are comma separated. Secrets are never logged.

| variable | default | description |
|---|---|---|
"""


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else "empty"
    if isinstance(value, tuple):
        return ", ".join(value) or "empty"
    if value is None:
        return "unset"
    return str(value)


def render() -> str:
    rows = []
    for name, info in Settings.model_fields.items():
        var = f"`{ENV_PREFIX}{name.upper()}`"
        if name == "clickhouse_url":
            var += " or `CLICKHOUSE_URL`"
        rows.append(f"| {var} | `{_default(info.default)}` | {info.description or ''} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    if "--check" in sys.argv:
        return 0 if DOC.exists() and DOC.read_text() == render() else 1
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

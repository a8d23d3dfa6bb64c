"""Workers keep pandas out of memory: clickhouse-connect would import it on the first insert."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
{prepare}
ctx = InsertContext("t", ["n", "s"], [get_from_name("UInt64"), get_from_name("String")],
                    data=[[1, "a"], [2, "b"]])
print(ctx.row_count, "pandas" in sys.modules, "pyarrow" in sys.modules)
"""


def run(prepare: str) -> list[str]:
    code = SCRIPT.format(prepare=prepare)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()  # fmt: skip


def test_rows_are_inserted_without_importing_pandas() -> None:
    pytest.importorskip("pandas", reason="without pandas installed there is nothing to keep out")
    assert run("") == ["2", "True", "True"]  # what clickhouse-connect does by itself
    prepare = "from pipeline.chclient import without_dataframes; without_dataframes()"
    assert run(prepare) == ["2", "False", "False"]

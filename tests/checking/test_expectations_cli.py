"""``scanflow expectations suggest`` writes a first suite that passes on its data and catches changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scanflow_core.checking.expectations import read_suite, validate_frame
from scanflow_core.cli import main


def _people(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.normal(50_000, 12_000, rows).round(2),
            "city": rng.choice(["paris", "lyon", "nice"], rows),
            "label": rng.integers(0, 2, rows),
        }
    )
    frame.loc[rng.choice(rows, rows // 20, replace=False), "income"] = np.nan
    return frame


def test_suggest_writes_a_ge_suite_that_passes_on_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "people.parquet"
    _people().to_parquet(data)
    out = tmp_path / "suites" / "people.json"

    assert main(["expectations", "suggest", str(data), "-o", str(out)]) == 0

    assert f"wrote {out}: suite 'people'" in capsys.readouterr().out
    suite = json.loads(out.read_text())
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert {
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_to_exist", "age"),
        ("expect_column_values_to_be_of_type", "income"),
        ("expect_column_values_to_not_be_null", "city"),
        ("expect_column_values_to_be_between", "age"),
        ("expect_column_values_to_be_in_set", "city"),
        ("expect_column_values_to_be_in_set", "label"),
    } <= kinds
    assert ("expect_column_values_to_be_in_set", "income") not in kinds  # high cardinality
    by_kind = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in suite["expectations"]}
    assert by_kind[("expect_column_values_to_not_be_null", "income")]["mostly"] == pytest.approx(0.85)
    assert by_kind[("expect_column_values_to_be_in_set", "city")]["value_set"] == ["lyon", "nice", "paris"]
    assert by_kind[("expect_table_row_count_to_be_between", None)] == {"min_value": 540, "max_value": 660}
    age = by_kind[("expect_column_values_to_be_between", "age")]
    assert age["min_value"] <= 18 and age["max_value"] >= 89

    assert main(["expectations", "validate", str(out), str(data)]) == 0  # the written suite, run by GE
    assert capsys.readouterr().out.startswith("✓ all ")


def test_the_suggested_suite_catches_changed_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, changed = tmp_path / "people.csv", tmp_path / "changed.csv"
    frame = _people()
    frame.to_csv(data, index=False)
    frame.loc[0, "age"] = 400
    frame.loc[1, "city"] = "berlin"
    frame.loc[2, "label"] = None
    frame.to_csv(changed, index=False)
    out = tmp_path / "people.suite.json"
    assert main(["expectations", "suggest", str(data), "-o", str(out)]) == 0

    result = validate_frame(pd.read_csv(changed), read_suite(out))
    failed = {(f["type"], f["column"]) for f in result.details["failed"]}
    assert {
        ("expect_column_values_to_be_between", "age"),
        ("expect_column_values_to_be_in_set", "city"),
        ("expect_column_values_to_not_be_null", "label"),
        ("expect_column_values_to_be_of_type", "label"),  # a null turned the ints into floats
    } <= failed
    capsys.readouterr()
    assert main(["expectations", "validate", str(out), str(changed)]) == 1
    assert capsys.readouterr().out.startswith("✗ ")


def test_what_the_sample_missed_is_dropped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _people(rows=2000)
    frame.loc[1234, "city"] = "marseille"  # one row in 2000: a sample of 100 misses it
    frame.loc[1500, "age"] = 150
    data = tmp_path / "rare.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "rare.suite.json"

    assert main(["expectations", "suggest", str(data), "-o", str(out), "--sample", "100"]) == 0

    text = capsys.readouterr().out
    assert "from 100 of 2000 rows; all met by" in text
    assert "dropped expect_column_values_to_be_in_set (city)" in text
    assert "dropped expect_column_values_to_be_between (age)" in text
    suite = read_suite(out)
    assert suite.meta["scanflow"]["sample_rows"] == 100
    assert validate_frame(frame, suite).passed


def test_suggest_refuses_to_overwrite_or_read_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "t.csv"
    data.write_text("a,b\n1,x\n2,y\n")
    out = tmp_path / "t.suite.json"
    out.write_text("{}")
    assert main(["expectations", "suggest", str(data), "-o", str(out)]) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert main(["expectations", "suggest", str(tmp_path / "none.csv")]) == 2
    assert "no data file" in capsys.readouterr().err
    assert main(["expectations", "suggest", str(data), "-o", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["name"] == "t"

"""The benchmark's adapter_lookup point, on a small file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from xchange_cli.bench import _modes
from xchange_cli.bench.adapter import adapter_lookup, summary_line


def test_adapter_lookup_measures_right_answers(tmp_path: Path) -> None:
    result = adapter_lookup(tmp_path, 5000, lookups=300)
    assert result["rows"] == 5000
    assert result["lookups"] == 300
    assert result["wrong_answers"] == 0
    assert result["index_bytes_per_row"] == pytest.approx(16, abs=0.1)
    assert 0 < result["median_us"] <= result["p99_us"] <= result["max_us"]
    assert 0 < result["cpu_median_us"] <= result["cpu_p99_us"]
    assert result["miss_median_us"] > 0
    assert not list(tmp_path.iterdir()), "the CSV is removed afterwards"
    line = summary_line(result)
    assert line.startswith("adapter lookup (5000 CSV rows")
    assert "0 wrong" in line


def test_adapter_lookup_is_a_mode_of_its_own() -> None:
    assert _modes("adapter_lookup") == ("adapter_lookup",)
    assert _modes("direct,adapter_lookup") == ("direct", "adapter_lookup")
    with pytest.raises(argparse.ArgumentTypeError, match="adapter_lookup"):
        _modes("adapter")

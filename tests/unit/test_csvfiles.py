"""CSV cells a spreadsheet would run, neutralised on write and restored on read; duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgselect.io.csvfiles import formula_restore, formula_safe, one_value_per_key


class TestFormulaCells:
    @pytest.mark.parametrize(
        "cell", ['=HYPERLINK("http://x","a")', "+1+2", "-x", "@SUM(A1)", "\tx", "\rx", "-inf", "'=x", "''+y"]
    )
    def test_formulas_get_a_quote_and_come_back(self, cell: str) -> None:
        written = formula_safe(cell)
        assert isinstance(written, str) and written == "'" + cell
        assert formula_restore(written) == cell

    @pytest.mark.parametrize(
        "cell", ["-1", "-0.25", "+3", "1e-05", "-2.5E+3", "a.png", "", "'a", "x=y", -1, -0.5]
    )
    def test_numbers_and_plain_text_are_left_alone(self, cell: object) -> None:
        assert formula_safe(cell) == cell
        if isinstance(cell, str):
            assert formula_restore(cell) == cell


class TestOneValuePerKey:
    def test_conflict_names_file_key_and_both_lines(self) -> None:
        rows = [(2, "a", "x"), (3, "b", "y"), (7, "a", "z")]
        with pytest.raises(
            ValueError, match=r"f\.csv: image a has two different labels: 'x' on line 2 and 'z' on line 7"
        ):
            one_value_per_key(rows, Path("f.csv"))

    def test_repeats_are_kept_once_in_first_order(self) -> None:
        rows = [(1, "b", "y"), (2, "a", "x"), (3, "b", "y")]
        assert one_value_per_key(rows, "f.csv") == {"b": (1, "y"), "a": (2, "x")}

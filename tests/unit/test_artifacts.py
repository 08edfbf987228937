"""Files a run writes: atomic (a failed write leaves the previous file and no temporary file), and CSV cells
a spreadsheet would run neutralised, with our readers giving back the real values."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imgselect.embeddings.file import read_ids
from imgselect.io.artifacts import (
    read_selection_csv,
    save_confusion_matrices,
    save_reconstructions,
    write_csv_atomic,
    write_json_atomic,
    write_selection_csv,
)
from imgselect.selection.selectors import Selection

IDS = ['=HYPERLINK("http://evil","x").png', "+cmd.png", "@a.png", "plain.png", "-", "'=q.png"]


def _selection() -> Selection:
    return Selection(
        indices=np.array([0, 1, 2, 3, 4, 5]),
        cluster=np.array([-1, 0, 1, 1, 2, 2]),
        distance=np.array([-1.0, 0.5, np.nan, 1e-5, 2.0, 3.0]),
        cluster_size=np.array([0, 3, 2, 2, 1, 1]),
        rule=["uniform", "random", "fill", "random", "random", "random"],
    )


class TestFormulaSafeCsv:
    def test_selection_round_trip_keeps_real_names(self, tmp_path: Path) -> None:
        f = tmp_path / "selection.csv"
        write_selection_csv(f, _selection(), IDS)
        with f.open(newline="", encoding="utf-8") as fh:
            cells = list(csv.reader(fh))[1:]  # the cells as a spreadsheet gets them
        assert [c[2] for c in cells] == ["'" + i if i != "plain.png" else i for i in IDS]
        # our own numbers stay numbers: cluster -1 and distance -1 are not formulas
        assert cells[0][4] == "-1" and cells[0][5] == "-1"
        rows = read_selection_csv(f)
        assert [r["image_id"] for r in rows] == IDS
        assert rows[0]["cluster"] == "-1" and rows[0]["distance"] == "-1" and rows[2]["distance"] == ""
        assert read_ids(f) == IDS  # selection.csv as the ids of embedding=file

    def test_any_csv_we_write(self, tmp_path: Path) -> None:
        f = tmp_path / "skipped.csv"
        write_csv_atomic(f, [("path", "reason"), ("=cmd|' /C calc'!A0.jpg", "-bad"), ("-1", -2.5)])
        assert f.read_text(encoding="utf-8").splitlines() == [
            "path,reason",
            "'=cmd|' /C calc'!A0.jpg,'-bad",
            "-1,-2.5",
        ]


def _leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


class TestAtomicWrites:
    def test_csv_failing_midway_keeps_the_previous_file(self, tmp_path: Path) -> None:
        f = tmp_path / "selection.csv"
        write_selection_csv(f, _selection(), IDS)
        before = f.read_bytes()
        with pytest.raises(IndexError):  # ids too short: fails after some rows were written
            write_selection_csv(f, _selection(), ["a.png", "b.png"])
        assert f.read_bytes() == before and _leftovers(tmp_path, f.name) == []

    def test_json_failing_midway_keeps_the_previous_file(self, tmp_path: Path) -> None:
        f = tmp_path / "result.json"
        write_json_atomic(f, {"a": 1})
        with pytest.raises(TypeError):
            write_json_atomic(f, {"b": 2, "c": object()})  # json.dump has written '{"b": 2, "c": ' by then
        assert f.read_text() == '{\n  "a": 1\n}\n' and _leftovers(tmp_path, f.name) == []

    @pytest.mark.parametrize("picture", ["reconstructions", "confusion"])
    def test_picture_failing_midway_keeps_the_previous_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, picture: str
    ) -> None:
        f = tmp_path / f"{picture}.png"
        images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)

        def draw() -> None:
            if picture == "reconstructions":
                save_reconstructions(f, images.float(), images.float())
            else:
                save_confusion_matrices(f, {"before": [[1, 0], [0, 1]]}, ["a", "b"])

        draw()
        before = f.read_bytes()
        assert before.startswith(b"\x89PNG")

        def broken(_: Any, fp: Any, *args: Any, **kwargs: Any) -> None:
            with open(fp, "wb") as out:
                out.write(b"\x89PNG half a picture")
            raise OSError("disk full")

        monkeypatch.setattr("imgselect.io.artifacts.save_image", lambda tensor, fp, **kw: broken(tensor, fp))
        monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken)
        with pytest.raises(OSError, match="disk full"):
            draw()
        assert f.read_bytes() == before and _leftovers(tmp_path, f.name) == []

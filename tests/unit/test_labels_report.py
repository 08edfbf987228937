"""Label providers and the Table 1 report on a hand-made sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imgselect.io.artifacts import write_selection_csv
from imgselect.labeling.labels import FileLabels, OracleLabels, read_label_file
from imgselect.pool import ImageSet
from imgselect.report import ceilings_of, efficiency_points, write_table1
from imgselect.report import main as report_main
from imgselect.selection.selectors import Selection

CLASSES = ["customer", "staff"]


def _pool(ids: list[str], hashes: list[str] | None = None, labels: list[int] | None = None) -> ImageSet:
    return ImageSet(
        images=torch.zeros((len(ids), 3, 8, 8), dtype=torch.uint8),
        ids=ids,
        hashes=hashes,
        labels=np.array(labels) if labels is not None else None,
    )


def _known(path: Path, pool: ImageSet) -> dict[str, str]:
    """image id -> class name of the labels a file gives the pool."""
    got = FileLabels(str(path)).known(pool, CLASSES)
    return {pool.ids[i]: CLASSES[c] for i, c in zip(got.indices, got.labels, strict=True)}


def _label_studio(tmp_path: Path, task: object) -> Path:
    """A Label Studio export of one task."""
    f = tmp_path / "export.json"
    f.write_text(json.dumps([task]))
    return f


def _ls_task(value: object) -> dict[str, object]:
    """Task 7 whose annotation 3 chose ``value`` (Label Studio writes ``{"choices": ["<class>"]}``)."""
    result = [{"type": "choices", "from_name": "label", "to_name": "image", "value": value}]
    return {"id": 7, "data": {"content_hash": "h1"}, "annotations": [{"id": 3, "result": result}]}


class TestLabels:
    def test_oracle_reveals_only_the_chosen(self) -> None:
        pool = _pool(["a", "b", "c"], labels=[1, 0, 0])
        got = OracleLabels().reveal(pool, np.array([0, 2]), CLASSES)
        assert got.indices.tolist() == [0, 2] and got.labels.tolist() == [1, 0]
        assert len(OracleLabels().known(pool, CLASSES)) == 0
        with pytest.raises(ValueError, match="labels=file"):
            OracleLabels().reveal(_pool(["a"]), np.array([0]), CLASSES)

    def test_csv_names_and_indices_by_image_id(self, tmp_path: Path) -> None:
        f = tmp_path / "l.csv"
        f.write_text("image_id,label\nimg/a.png,staff\nimg/b.png,0\n\n")
        pool = _pool(["img/b.png", "img/a.png", "img/c.png"], hashes=["h1", "h2", "h3"])
        assert _known(f, pool) == {"img/a.png": "staff", "img/b.png": "customer"}

    def test_labels_follow_the_content_hash_not_the_path(self, tmp_path: Path) -> None:
        f = tmp_path / "labels_template.csv"
        f.write_text(
            "tile,content_hash,image_id,label\n1,h2,/old/place/a.png,staff\n2,h1,/old/place/b.png,\n"
        )
        pool = _pool(["/new/b.png", "/new/a.png"], hashes=["h1", "h2"])  # moved, and in another order
        got = FileLabels(str(f)).known(pool, CLASSES)
        assert got.indices.tolist() == [1] and got.labels.tolist() == [1]
        assert got.unlabeled == ["tile 2: h1"]  # said, not guessed

    def test_later_files_add_rounds_and_win(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        r1, r2 = tmp_path / "r1.csv", tmp_path / "r2.csv"
        r1.write_text("content_hash,label\nh1,staff\nh2,staff\n")
        r2.write_text("content_hash,label\nh3,customer\nh2,customer\nh9,staff\n")
        pool = _pool(["a", "b", "c"], hashes=["h1", "h2", "h3"])
        got = FileLabels([str(r1), str(r2)]).known(pool, CLASSES)
        assert dict(zip(got.indices.tolist(), got.labels.tolist(), strict=True)) == {0: 1, 1: 0, 2: 0}
        assert any("relabels b as 'customer'" in n for n in got.notes)
        assert any("1 labeled images of" in n and "not in this pool" in n for n in got.notes)

    def test_errors_name_the_file_and_line(self, tmp_path: Path) -> None:
        f = tmp_path / "l.csv"
        f.write_text("a.png,staff\nb.png,manager\n")
        pool = _pool(["a.png", "b.png"], hashes=["h1", "h2"])
        with pytest.raises(ValueError, match=r"l\.csv:2: label 'manager' is not one of the classes"):
            FileLabels(str(f)).known(pool, CLASSES)
        with pytest.raises(FileNotFoundError, match="labels.path=.*nope.csv"):
            FileLabels(str(tmp_path / "nope.csv")).known(pool, CLASSES)
        f.write_text("content_hash,label\nzz,staff\n")
        with pytest.raises(ValueError, match="none of the labels .* belongs to an image of"):
            FileLabels(str(f)).known(pool, CLASSES)

    def test_same_image_two_labels_names_both_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "l.csv"
        f.write_text("image_id,label\na.png,staff\nb.png,customer\na.png,customer\n")
        pool = _pool(["a.png", "b.png"], hashes=["h1", "h2"])
        with pytest.raises(
            ValueError,
            match=r"a\.png has two different labels: 'staff' \(.*l\.csv:2\) and 'customer' \(.*l\.csv:4\)",
        ):
            FileLabels(str(f)).known(pool, CLASSES)
        f.write_text("image_id,label\na.png,staff\nb.png,customer\na.png,staff\n")  # the same twice: fine
        assert _known(f, pool) == {"a.png": "staff", "b.png": "customer"}

    def test_csv_utf8_with_byte_order_mark(self, tmp_path: Path) -> None:
        """A spreadsheet's "CSV UTF-8" starts with a byte-order mark: the header is still a header."""
        f = tmp_path / "l.csv"
        f.write_bytes("image_id,label\ncafé.png,staff\n".encode("utf-8-sig"))
        assert [(e.key, e.label) for e in read_label_file(f)] == [("café.png", "staff")]

    def test_csv_not_utf8_names_file_and_line(self, tmp_path: Path) -> None:
        f = tmp_path / "l.csv"
        f.write_bytes("image_id,label\na.png,staff\ncafé.png,staff\n".encode("cp1252"))
        with pytest.raises(
            ValueError, match=r"l\.csv:3: not UTF-8 text \(byte 0xe9\)\. Save the file as 'CSV UTF-8"
        ):
            read_label_file(f)
        f.write_bytes("image_id,label\n".encode("utf-16"))
        with pytest.raises(ValueError, match=r"l\.csv is UTF-16 text"):
            read_label_file(f)

    def test_csv_labeled_selection_keeps_formula_like_names(self, tmp_path: Path) -> None:
        """selection.csv neutralises an id a spreadsheet would run; labels read from it match the real id."""
        name = "=HYPERLINK(x).png"
        sel = Selection(
            indices=np.array([0]), cluster=np.array([-1]), distance=np.array([np.nan]),
            cluster_size=np.array([0]), rule=["uniform"],
        )  # fmt: skip
        f = tmp_path / "selection.csv"
        write_selection_csv(f, sel, [name])  # a pool without content hashes: matched by id
        lines = f.read_text().splitlines()
        assert lines[1].split(",")[2] == "'" + name  # what a spreadsheet gets: text, not a formula
        f.write_text("\n".join([lines[0] + ",label", lines[1] + ",staff"]) + "\n")  # a person adds labels
        assert _known(f, _pool([name], hashes=["h1"])) == {name: "staff"}

    def test_label_studio_choices_as_a_string_is_the_whole_label(self, tmp_path: Path) -> None:
        f = _label_studio(tmp_path, _ls_task({"choices": "staff"}))  # hand-written, not ["staff"]
        assert [(e.key, e.label) for e in read_label_file(f)] == [("h1", "staff")]
        f = _label_studio(tmp_path, _ls_task({"choices": ["customer"]}))  # as Label Studio writes it
        assert [(e.key, e.label) for e in read_label_file(f)] == [("h1", "customer")]

    @pytest.mark.parametrize(
        ("task", "says"),
        [
            ({"id": 7, "data": "x"}, r"task 7: 'data' is str 'x', expected an object with content_hash"),
            ("x", r"task 1 is str 'x', not a task object"),
            (
                {"id": 7, "data": {"content_hash": "h1"}, "annotations": {"id": 3}},
                r"task 7: 'annotations' is dict .*expected a list",
            ),
            (
                {"id": 7, "data": {"content_hash": "h1"}, "annotations": [{"id": 3, "result": "staff"}]},
                r"task 7: annotation 3: 'result' is str, expected a list",
            ),
            (_ls_task(["staff"]), r"task 7: annotation 3: a choices result's 'value' is list \['staff'\]"),
            (_ls_task({"choices": 3}), r"task 7: annotation 3: 'choices' is int 3, expected a list"),
        ],
    )
    def test_label_studio_odd_shapes_name_the_file_and_task(
        self, tmp_path: Path, task: object, says: str
    ) -> None:
        f = _label_studio(tmp_path, task)
        with pytest.raises(ValueError, match=rf"export\.json: {says}"):
            read_label_file(f)


def _job(
    root: Path, name: str, selector: str, budget: int, seed: int, before: float, after: float | None
) -> None:
    d = root / name
    d.mkdir()
    metrics = {"before": {"f1": before}, "after": {"f1": after} if after is not None else None}
    (d / "result.json").write_text(
        json.dumps(
            {
                "selector": selector,
                "pick": "random" if selector == "ae" else "uniform",
                "budget": budget,
                "seed": seed,
                "metrics": metrics,
            }
        )
    )


def test_table1_on_hand_made_sweep(tmp_path: Path) -> None:
    _job(tmp_path, "0", "ae", 125, 0, 0.80, 0.90)
    _job(tmp_path, "1", "ae", 125, 1, 0.84, 0.86)
    _job(tmp_path, "2", "random", 125, 0, 0.70, 0.75)
    _job(tmp_path, "3", "random", 200, 0, 0.72, None)
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "train.log").write_text("still running")
    paths = write_table1(tmp_path)
    md = paths["md"].read_text()
    assert "4 finished jobs, 1 not finished: 4" in md
    assert "| Autoencoder | After pseudo-labeling | 0.880 ± 0.028 (n=2) | – |" in md
    assert "| Random selection | Before pseudo-labeling | 0.700 (n=1) | 0.720 (n=1) |" in md
    assert md.index("Random selection") < md.index("| Autoencoder |")  # the paper's row order
    rows = paths["csv"].read_text().splitlines()
    assert rows[0] == "selector,phase,budget,metric,mean,std,n"
    assert "Autoencoder,before,125,f1,0.820000,0.028284,2" in rows
    assert paths["png"].stat().st_size > 1000


def test_report_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    _job(tmp_path, "0", "ae", 125, 0, 0.8, 0.9)
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table1.md").exists()


def test_selection_only_sweep_lists_what_each_job_chose(tmp_path: Path) -> None:
    """After `~classifier` there is no F1: the report says so and tabulates the selections instead."""
    for name, selector, hist in (
        ("0", "random", {"customer": 3, "staff": 0}),
        ("1", "typiclust", {"customer": 1, "staff": 2}),
    ):
        (tmp_path / name).mkdir()
        result = {
            "selector": selector,
            "pick": "uniform" if selector == "random" else "typical",
            "embedding": None if selector == "random" else "pixels",
            "budget": 3,
            "seed": 0,
            "metrics": {"before": None, "after": None},
            "selected_class_histogram": hist,
        }
        (tmp_path / name / "result.json").write_text(json.dumps(result))
    paths = write_table1(tmp_path)
    md = paths["md"].read_text()
    assert md.startswith("# Selections of the sweep") and "No classifier ran" in md
    assert "| Random selection | - | 3 | 0 | 1 of 2 | customer (3) |" in md
    assert "| TypiClust (pixels) | pixels | 3 | 0 | 2 of 2 | staff (2) |" in md
    assert "png" not in paths and not (tmp_path / "table1.png").exists()  # no empty figure


def test_table1_keeps_jobs_of_other_settings_apart(tmp_path: Path) -> None:
    """A sweep over folds is not pooled as if its jobs were seeds: each setting gets rows of its own."""
    for name, folds, seed, f1 in (("0", 2, 0, 0.60), ("1", 2, 1, 0.62), ("2", 3, 0, 0.90)):
        _job(tmp_path, name, "random", 125, seed, f1, None)
        (tmp_path / name / ".hydra").mkdir()
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(
            f"- selector=random\n- folds={folds}\n- seed={seed}\n- paths.log_dir=/x/{name}\n"
        )
    md = write_table1(tmp_path)["md"].read_text()
    assert "besides selector, embedding, budget and seed: folds;" in md
    assert "| Random selection [folds=2] | Before pseudo-labeling | 0.610 ± 0.014 (n=2) |" in md
    assert "| Random selection [folds=3] | Before pseudo-labeling | 0.900 (n=1) |" in md


def test_label_efficiency_draws_one_line_per_selector_and_learner(tmp_path: Path) -> None:
    """label_efficiency.png beside Table 1: each selector x learner a line over the labels, seeds pooled, and a
    job that labeled the whole pool as the ceiling, not a point."""
    k = 0
    for selector in ("random", "typiclust"):
        for learner, gain in (("pseudo", 0.0), ("fixmatch", 0.1)):
            for budget in (10, 20):
                for seed in (0, 1):
                    d = tmp_path / str(k)
                    d.mkdir()
                    after = 0.5 + gain + budget / 100 + seed / 100 + (0.05 if selector == "typiclust" else 0)
                    result = {
                        "selector": selector, "pick": "typical", "embedding": "pixels", "budget": budget,
                        "seed": seed, "pool_size": 1000, "classifier": {"learner": learner, "labeled": budget},
                        "metrics": {"before": {"accuracy": 0.4}, "after": {"accuracy": after}},
                    }  # fmt: skip
                    (d / "result.json").write_text(json.dumps(result))
                    k += 1
    ceiling = tmp_path / "ceiling"
    ceiling.mkdir()
    (ceiling / "result.json").write_text(json.dumps({
        "selector": "random", "budget": 1000, "seed": 0, "pool_size": 1000, "classifier": {"learner": "none"},
        "metrics": {"before": {"accuracy": 0.9}, "after": None},
    }))  # fmt: skip
    from imgselect.report import collect

    results, _ = collect(tmp_path)
    lines = efficiency_points(results, "accuracy")
    assert sorted(lines) == [
        "Random selection, FixMatch",
        "Random selection, pseudo-labels (paper)",
        "TypiClust (pixels), FixMatch",
        "TypiClust (pixels), pseudo-labels (paper)",
    ]
    assert lines["TypiClust (pixels), FixMatch"][20] == pytest.approx([0.85, 0.86])  # seeds pooled per count
    assert 1000 not in lines["Random selection, pseudo-labels (paper)"]  # the ceiling is no point
    assert ceilings_of(results, "accuracy") == {"all 1000 labels (labels only)": 0.9}
    paths = write_table1(tmp_path, metric="accuracy", ceilings={"all labels, FixMatch": 0.95})
    assert paths["curve"].name == "label_efficiency.png" and paths["curve"].stat().st_size > 5000
    assert "With the pool (semi)" in paths["md"].read_text()  # not "pseudo-labeling" for FixMatch's rows


@pytest.mark.parametrize("overrides", [True, False])
def test_table1_gives_each_learner_rows_of_its_own(tmp_path: Path, overrides: bool) -> None:
    """`semi=pseudo,fixmatch` in one sweep (or copies of its results, without .hydra): the learners are never
    pooled as if seeds, their rows name them, and pseudo.size (which FixMatch jobs leave empty) is no setting
    that sets the pseudo-label jobs apart."""
    for name, learner, seed, after in (("0", "pseudo", 0, 0.60), ("1", "pseudo", 1, 0.62),
                                       ("2", "fixmatch", 0, 0.70), ("3", "fixmatch", 1, 0.74)):  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        result = {
            "selector": "random", "budget": 20, "seed": seed, "folds": 3,
            "pseudo_size": 1000 if learner == "pseudo" else None, "classifier": {"learner": learner},
            "metrics": {"before": {"accuracy": 0.5}, "after": {"accuracy": after}},
        }  # fmt: skip
        (d / "result.json").write_text(json.dumps(result))
        if overrides:
            (d / ".hydra").mkdir()
            (d / ".hydra" / "overrides.yaml").write_text(f"- semi={learner}\n- seed={seed}\n- budget=20\n")
    md = write_table1(tmp_path, metric="accuracy")["md"].read_text()
    assert "| Random selection, pseudo-labels (paper) | With the pool (semi) | 0.610 ± 0.014 (n=2) |" in md
    assert "| Random selection, FixMatch | With the pool (semi) | 0.720 ± 0.028 (n=2) |" in md
    assert "pseudo.size" not in md and "semi=" not in md and "Settings that differ" not in md
    # two pseudo-label sizes are two settings again
    result = json.loads((tmp_path / "1" / "result.json").read_text())
    (tmp_path / "1" / "result.json").write_text(json.dumps({**result, "pseudo_size": 500}))
    if overrides:
        (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text(
            "- semi=pseudo\n- seed=1\n- pseudo.size=500\n"
        )
    md = write_table1(tmp_path, metric="accuracy")["md"].read_text()
    assert (
        "| Random selection, pseudo-labels (paper) [pseudo.size=500] | With the pool (semi) | 0.620 (n=1) |"
        in md
    )

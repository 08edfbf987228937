"""The benchmark quality table (benchmarks/quality.py) on hand-made job results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality


def _job(selector: str, pick: str, budget: int, seed: int, before: float, after: float, **kw: Any) -> dict:
    return {
        "selector": selector,
        "pick": pick,
        "budget": budget,
        "seed": seed,
        "classes": kw.get("classes", ["T-shirt/top", "Shirt"]),
        "selected_class_histogram": kw.get(
            "hist", {"T-shirt/top": budget // 2, "Shirt": budget - budget // 2}
        ),
        "metrics": {
            "before": {"f1": before, "accuracy": before},
            "after": {"f1": after, "accuracy": after},
        },
        "output_dir": f"logs/x/{selector}_{pick}_{budget}_{seed}",
    }


def test_gain_is_paired_by_seed_and_skips_unpaired_seeds() -> None:
    jobs = [
        _job("random", "random", 125, 0, 0.70, 0.75),
        _job("random", "random", 125, 1, 0.60, 0.65),
        _job("ae", "random", 125, 0, 0.72, 0.80),
        _job("ae", "random", 125, 1, 0.61, 0.66),
        _job("ae", "random", 125, 2, 0.90, 0.90),  # no random run for seed 2: no pair
    ]
    s = quality.summarise(jobs)
    cell = s["cells"]["Autoencoder|125"]
    assert cell["after"]["n"] == 3
    gain = cell["gain_over_random_after"]
    assert gain["n"] == 2
    assert gain["values"] == pytest.approx([0.05, 0.01])
    assert gain["mean"] == pytest.approx(0.03)
    assert "gain_over_random_after" not in s["cells"]["Random selection|125"]
    assert s["selectors"][0] == "Random selection"


def test_duplicate_job_names_both_folders() -> None:
    jobs = [_job("ae", "centroid", 500, 0, 0.7, 0.7), _job("ae", "centroid", 500, 0, 0.8, 0.8)]
    jobs[1]["output_dir"] = "logs/other/ae_centroid_500_0"
    with pytest.raises(ValueError, match=r"centroid pick\), budget 500, seed 0: .*logs/other"):
        quality.summarise(jobs)


def test_ten_class_table_says_macro_f1_and_chance(tmp_path: Path) -> None:
    classes = [f"c{i}" for i in range(10)]
    hist = {c: 10 for c in classes} | {"c3": 2}
    jobs = [
        _job("random", "random", 125, 0, 0.4, 0.5, classes=classes, hist=hist),
        _job("ae", "random", 125, 0, 0.4, 0.45, classes=classes, hist=hist),
    ]
    for i, j in enumerate(jobs):
        d = tmp_path / "sweep" / f"{i}_job"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(j))
    out = tmp_path / "q.json"
    assert quality.main([str(tmp_path / "sweep"), "--out", str(out), "--command", "test"]) == 0
    md = out.with_suffix(".md").read_text()
    assert md.startswith("Macro F1 on the validation set")
    assert "about 1/10" in md
    assert "| Autoencoder | after | -5.0 ± 0.0 |" in md
    saved = json.loads(out.read_text())
    assert saved["jobs"] == 2
    share = saved["summary"]["cells"]["Random selection|125"]["smallest_class_share"]["mean"]
    assert share == pytest.approx(2 / 92)


def test_ssl_table_pairs_by_seed_and_counts_signs(tmp_path: Path) -> None:
    import ssl_pipeline

    def job(selector: str, init: str, seed: int, before: float, after: float | None) -> dict[str, Any]:
        return {
            "selector": selector,
            "classifier_init": init,
            "budget": 125,
            "seed": seed,
            "metrics": {"before": {"f1": before}, "after": {"f1": after} if after is not None else None},
        }

    jobs = [
        job("random", "scratch", 0, 0.60, 0.70),
        job("random", "scratch", 1, 0.70, 0.72),
        job("random", "ssl", 1, 0.75, 0.71),  # seed 0 missing: only seed 1 pairs
        job("random", "ssl", 2, 0.90, 0.90),  # no scratch partner
        job("typiclust", "scratch", 0, 0.65, None),  # no "after": pairs only before
    ]
    for i, j in enumerate(jobs):
        (tmp_path / f"{i}.json").write_text(json.dumps(j))
    (tmp_path / "ssl_backbone.json").write_text(json.dumps({"epochs": 30}))  # not a job: ignored
    t = ssl_pipeline.table(ssl_pipeline.load_jobs([tmp_path]))
    assert t["summary"]["random/scratch/125"]["before"]["mean"] == pytest.approx(0.65)
    p = t["paired_by_seed"]["125: ssl init - scratch, random (before)"]
    assert p["per_seed"] == pytest.approx([0.05]) and p["positive"] == 1 and p["n"] == 1
    assert t["paired_by_seed"]["125: ssl init - scratch, random (after)"]["positive"] == 0
    assert t["paired_by_seed"]["125: typiclust - random, scratch (before)"]["per_seed"] == pytest.approx(
        [0.05]
    )
    assert "125: typiclust - random, scratch (after)" not in t["paired_by_seed"]
    assert "125: typiclust + ssl init - random from scratch (before)" not in t["paired_by_seed"]  # no partner
    jobs.append(job("typiclust", "ssl", 1, 0.80, 0.85))
    (tmp_path / "5.json").write_text(json.dumps(jobs[-1]))
    t = ssl_pipeline.table(ssl_pipeline.load_jobs([tmp_path]))
    both = t["paired_by_seed"]["125: typiclust + ssl init - random from scratch (after)"]
    assert both["per_seed"] == pytest.approx([0.13]) and both["positive"] == 1
    md = ssl_pipeline.markdown(t)
    assert "| random | `pretrained=ssl` | 0.825 ± 0.106 / 0.805 ± 0.134 |" in md
    fixmatch = {**job("typiclust", "ssl", 1, 0.80, 0.95), "classifier": {"learner": "fixmatch"}}
    (tmp_path / "fm.json").write_text(json.dumps(fixmatch))  # issue 21: a learner beside pseudo-labels
    t = ssl_pipeline.table(ssl_pipeline.load_jobs([tmp_path]))
    fm = t["paired_by_seed"]["125: fixmatch - pseudo-labels, typiclust, ssl (after)"]
    assert fm["per_seed"] == pytest.approx([0.10]) and fm["positive"] == 1
    assert (
        "| typiclust | `pretrained=ssl`, `semi=fixmatch` | 0.800 ± 0.000 / 0.950 ± 0.000 |"
        in ssl_pipeline.markdown(t)
    )
    (tmp_path / "fm.json").unlink()
    (tmp_path / "6.json").write_text(json.dumps(jobs[0]))
    with pytest.raises(SystemExit, match="two jobs for random/scratch/125 seed 0"):
        ssl_pipeline.table(ssl_pipeline.load_jobs([tmp_path]))


def test_ssl_table_reports_the_metric_asked_for_and_names_it(tmp_path: Path) -> None:
    import ssl_pipeline

    ten = [f"c{i}" for i in range(10)]
    for seed, (acc, f1) in enumerate([(0.40, 0.30), (0.50, 0.45)]):
        for init, shift in (("scratch", 0.0), ("ssl", 0.10)):
            metrics = {"accuracy": acc + shift, "f1": f1 + shift}
            job = {
                "selector": "random",
                "classifier_init": init,
                "budget": 20,
                "seed": seed,
                "classes": ten,
                "metrics": {"before": metrics, "after": None},
            }
            (tmp_path / f"{init}{seed}.json").write_text(json.dumps(job))
    jobs = ssl_pipeline.load_jobs([tmp_path])
    acc = ssl_pipeline.table(jobs, "accuracy")
    assert acc["summary"]["random/scratch/20"]["before"]["mean"] == pytest.approx(0.45)
    assert acc["paired_by_seed"]["20: ssl init - scratch, random (before)"]["per_seed"] == pytest.approx(
        [0.1, 0.1]
    )
    assert ssl_pipeline.table(jobs, "f1")["summary"]["random/scratch/20"]["before"]["mean"] == pytest.approx(
        0.375
    )
    assert ssl_pipeline.markdown(acc).startswith("Accuracy before / after")
    assert "Macro F1 before / after" in ssl_pipeline.markdown(ssl_pipeline.table(jobs))
    two = [dict(j, classes=["T-shirt/top", "Shirt"]) for j in jobs]
    assert ssl_pipeline.table(two)["metric_label"] == "F1 of Shirt"
    # one selector on two embeddings: two rows, each paired with random
    for emb, acc in (("ssl", 0.6), ("pixels", 0.7)):
        job = {"selector": "typiclust", "embedding": emb, "classifier_init": "ssl", "budget": 20, "seed": 0}
        job |= {"classes": ten, "metrics": {"before": {"accuracy": acc, "f1": acc}, "after": None}}
        (tmp_path / f"typiclust_{emb}.json").write_text(json.dumps(job))
    t = ssl_pipeline.table(ssl_pipeline.load_jobs([tmp_path]), "accuracy")
    assert t["paired_by_seed"]["20: typiclust on pixels - random, ssl (before)"]["per_seed"] == pytest.approx(
        [0.2]
    )
    assert t["paired_by_seed"]["20: typiclust on ssl - random, ssl (before)"]["per_seed"] == pytest.approx(
        [0.1]
    )


def test_fixmatch_settings_table_pairs_one_setting_by_seed(tmp_path: Path) -> None:
    import fixmatch_settings

    def job(flex: bool, seed: int, before: float, after: float, val_size: int = 2000) -> dict[str, Any]:
        last = {"train/mask": 1.0 if flex else 0.4, "train/pseudo_acc": 0.7 if flex else 0.9}
        fm = {"steps": 1000, "settings": {"flex": flex, "threshold": 0.95}, "last_epoch": last}
        return {
            "selector": "typiclust",
            "budget": 20,
            "seed": seed,
            "val_size": val_size,
            "classifier": {"learner": "fixmatch", "fixmatch": fm},
            "metrics": {"before": {"accuracy": before}, "after": {"accuracy": after}},
        }

    runs = [(True, 0, 0.5, 0.60), (True, 1, 0.5, 0.62), (False, 0, 0.5, 0.66), (False, 1, 0.5, 0.61)]
    runs.append((False, 2, 0.5, 0.70))  # no flex=true partner: counted in its cell, not paired
    for i, r in enumerate(runs):
        (tmp_path / f"{i}.json").write_text(json.dumps(job(*r)))
    t = fixmatch_settings.table(fixmatch_settings.load_jobs([tmp_path]), "flex", "accuracy")
    assert t["summary"]["20/False"]["after"]["n"] == 3 and t["summary"]["20/True"]["mask"]["mean"] == 1.0
    d = t["paired_by_seed"]["20: flex=True - flex=False, after"]
    assert d["per_seed"] == pytest.approx([-0.06, 0.01]) and d["positive"] == 1 and d["n"] == 2
    gain = t["paired_by_seed"]["20: flex=True, after - the same job's labels alone"]
    assert gain["per_seed"] == pytest.approx([0.10, 0.12]) and gain["positive"] == 2
    md = fixmatch_settings.markdown(t)
    assert "| 20 | True | 2 | 0.500 ± 0.000 / 0.610 ± 0.014 | 1.000 ± 0.000 | 0.700 ± 0.000 |" in md
    assert "| 20: flex=True - flex=False, after | -2.5 (1/2) | -6.0, +1.0 |" in md
    (tmp_path / "test.json").write_text(json.dumps(job(True, 2, 0.5, 0.6, val_size=10000)))
    with pytest.raises(SystemExit, match="different sets"):  # a held-out split never beside the test split
        fixmatch_settings.table(fixmatch_settings.load_jobs([tmp_path]), "flex", "accuracy")
    (tmp_path / "test.json").unlink()
    with pytest.raises(SystemExit, match="no FixMatch setting 'mu'"):
        fixmatch_settings.table(fixmatch_settings.load_jobs([tmp_path]), "mu", "accuracy")
    # the run's length against the shipped one, among the flex=True jobs only (steps: recorded beside settings)
    long = job(True, 0, 0.5, 0.65)
    long["classifier"]["fixmatch"]["steps"] = 2000
    (tmp_path / "long.json").write_text(json.dumps(long))
    jobs = fixmatch_settings.keep(fixmatch_settings.load_jobs([tmp_path]), ["flex=True"])
    assert len(jobs) == 3
    t = fixmatch_settings.table(jobs, "steps", "accuracy")
    assert t["paired_by_seed"]["20: steps=2000 - steps=1000, after"]["per_seed"] == pytest.approx([0.05])
    with pytest.raises(SystemExit, match="no jobs"):
        fixmatch_settings.table(fixmatch_settings.keep(jobs, ["flex=maybe"]), "steps", "accuracy")

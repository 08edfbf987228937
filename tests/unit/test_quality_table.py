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

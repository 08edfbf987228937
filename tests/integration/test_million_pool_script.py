"""benchmarks/million_pool.py end to end on a tiny pool: both phases run in their own processes and report
every stage (the script behind docs/BENCHMARKS.md, "A million images on one machine")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_million_pool_script_reports_every_stage(tmp_path: Path, fmnist_dir: Path) -> None:
    out = tmp_path / "million.json"
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "million_pool.py"), "--n", "2500", "--sizes", "16"]
    cmd += ["--k", "10", "--dim", "8", "--work", str(work), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["job"]["bytes"] == 2500 * 3 * 16 * 16
    stages = list(row["job"]["stages"])
    assert stages[0] == "load (map the store)" and stages[-1].startswith("select (TypiClust, K = 10")
    assert all(s["seconds"] >= 0 and s["peak_rss_sampled"] > 0 for s in row["job"]["stages"].values())
    assert row["job"]["kmeans_gemm_bound_seconds"] > 0 and row["job"]["kmeans_over_bound"] > 0
    assert "| decode into the store |" in out.with_suffix(".md").read_text()
    assert not work.exists()  # the stores and embeddings are removed unless --keep

"""Table 1 and the label-efficiency figure of both learners from committed job results: each ``*.json`` job copy
under the given folders whose classifier started as ``--init`` (by default the pool's SSL backbone) goes into a
sweep-like folder, one job a subfolder, and :func:`imgselect.report.write_table1` draws it. Jobs that labeled their
whole pool are drawn as the ceiling line.

    .venv/bin/python benchmarks/learners_figure.py benchmarks/results/fixmatch_10class_jobs \\
        benchmarks/results/ssl_pipeline_10class_jobs --metric accuracy --out benchmarks/results/fixmatch_10class

writes ``table1_learners.{md,csv,png}`` and ``label_efficiency_learners.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from imgselect.report import write_table1  # noqa: E402


def gather(folders: list[Path], init: str, into: Path) -> int:
    """Copy the job results under ``folders`` started from ``init`` into ``into/<name>/result.json``."""
    n = 0
    for folder in folders:
        for f in sorted(folder.rglob("*.json")):
            r = json.loads(f.read_text())
            if not isinstance(r, dict) or "metrics" not in r or r.get("classifier_init") != init:
                continue
            job = into / f"{folder.name}__{f.stem}"
            job.mkdir()
            shutil.copy(f, job / "result.json")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="folders of job result copies (*.json)")
    ap.add_argument(
        "--init", default="ssl", help="classifier_init of the jobs to draw (scratch, ssl, hub, file)"
    )
    ap.add_argument("--metric", default="f1", choices=["f1", "accuracy", "auroc"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n = gather(args.folders, args.init, Path(tmp))
        if not n:
            sys.exit(
                f"no job results with classifier_init={args.init!r} under {', '.join(map(str, args.folders))}"
            )
        paths = write_table1(tmp, tmp, args.metric)
        args.out.mkdir(parents=True, exist_ok=True)
        for kind, path in paths.items():
            name = path.name.replace("table1", "table1_learners").replace(
                "label_efficiency", "label_efficiency_learners"
            )
            shutil.copy(path, args.out / name)
            if path.suffix == ".md":  # name the job folders drawn, not the temporary folder
                drawn = ", ".join(f"`{f}`" for f in args.folders)
                text = (
                    (args.out / name)
                    .read_text()
                    .replace(f"`{tmp}`", f"{drawn} (classifier_init={args.init})")
                )
                (args.out / name).write_text(text)
            print(f"{kind}: {args.out / name}")
    print(f"{n} jobs drawn")


if __name__ == "__main__":
    main()

"""A job's folder across re-runs (imgselect.run.jobfolder): input identity, earlier outputs kept, a person's files
never written over, one job per folder, workers that end with their sweep, input files checked first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from imgselect.run.jobfolder import (
    JobBusy,
    check_writable,
    free_name,
    input_digests,
    input_paths,
    job_lock,
    keep_earlier_outputs,
)
from imgselect.run.settings import check_image_size, check_input_files, check_numbers
from tests.conftest import ROOT


def _cfg(**values: object) -> object:
    return OmegaConf.create(values)


class TestInputs:
    def test_an_edited_labels_file_changes_the_jobs_inputs(self, tmp_path: Path) -> None:
        labels = tmp_path / "labels.csv"
        labels.write_text("tile,content_hash,image_id,label\n1,abc,a.png,cat\n2,def,b.png,dog\n")
        cfg = _cfg(labels={"path": str(labels)}, classifier={"pretrained": None})
        before = input_digests(cfg)  # type: ignore[arg-type]
        assert set(before) == {"labels.path"}
        assert input_digests(cfg) == before  # type: ignore[arg-type]
        labels.write_text("tile,content_hash,image_id,label\n1,abc,a.png,cat\n2,def,b.png,\n")
        assert input_digests(cfg) != before  # type: ignore[arg-type]

    def test_a_grown_pool_folder_changes_the_jobs_inputs(self, tmp_path: Path) -> None:
        pool = tmp_path / "pool"
        (pool / "cam1").mkdir(parents=True)
        (pool / "cam1" / "a.png").write_bytes(b"x")
        cfg = _cfg(data={"pool_dir": str(pool), "val": None, "pool_labels": "subfolders"})
        before = input_digests(cfg)  # type: ignore[arg-type]
        assert list(before) == ["data.pool_dir"]  # "subfolders" names no file
        (pool / "cam1" / "b.png").write_bytes(b"y")
        assert input_digests(cfg) != before  # type: ignore[arg-type]

    def test_lists_hub_and_missing_values(self, tmp_path: Path) -> None:
        a, b = tmp_path / "r1.csv", tmp_path / "r2.json"
        cfg = _cfg(
            labels={"path": [str(a), str(b)]}, classifier={"pretrained": "hub"}, embedding={"path": "???"}
        )
        assert input_paths(cfg) == {"labels.path": [a, b]}  # type: ignore[arg-type]
        assert input_digests(cfg) == {"labels.path": input_digests(cfg)["labels.path"]}  # type: ignore[arg-type]
        a.write_text("round 1")
        b.write_text("round 2")
        before = input_digests(cfg)  # type: ignore[arg-type]
        b.write_text("round 2, one label changed")  # the second round's file alone
        assert input_digests(cfg) != before  # type: ignore[arg-type]


class TestEarlierOutputs:
    def _earlier_run(self, out: Path) -> None:
        (out / "label_studio" / "images").mkdir(parents=True)
        (out / "label_studio" / "tasks.json").write_text("[]")
        (out / "label_studio" / "export.json").write_text('[{"person": "labels"}]')
        (out / "selection.csv").write_text("tile\n1\n")
        (out / "labels_template.csv").write_text("tile,content_hash,image_id,label\n1,abc,a.png,cat\n")
        (out / "wandb" / "offline-run-1").mkdir(parents=True)
        (out / "wandb" / "offline-run-1" / "run-1.wandb").write_bytes(b":W&B")

    def test_outputs_move_and_the_files_this_run_reads_stay(self, tmp_path: Path) -> None:
        out = tmp_path / "job"
        self._earlier_run(out)
        template, export = out / "labels_template.csv", out / "label_studio" / "export.json"
        dest = keep_earlier_outputs(out, [template, export])
        assert dest is not None and dest.parent == out / "earlier"
        # inputs: copied into the archive, still in place with the same bytes
        assert template.read_text().endswith("cat\n") and (dest / "labels_template.csv").read_text().endswith(
            "cat\n"
        )
        assert export.is_file() and (dest / "label_studio" / "export.json").is_file()
        # everything else moved
        assert not (out / "selection.csv").exists() and (dest / "selection.csv").is_file()
        assert not (out / "label_studio" / "tasks.json").exists()
        assert (dest / "label_studio" / "tasks.json").is_file()
        assert not (
            out / "wandb" / "offline-run-1"
        ).exists()  # `wandb sync <job>/wandb/offline-run-*` sees none
        assert (dest / "wandb" / "offline-run-1" / "run-1.wandb").is_file()

    def test_nothing_to_keep_in_a_new_folder(self, tmp_path: Path) -> None:
        (tmp_path / "train.log").write_text("log")
        assert keep_earlier_outputs(tmp_path, []) is None
        assert not (tmp_path / "earlier").exists()

    def test_a_file_this_run_reads_gets_no_new_content(self, tmp_path: Path) -> None:
        template = tmp_path / "labels_template.csv"
        template.write_text("filled")
        other = free_name(template, [template])
        assert other != template and other.name.startswith("labels_template-") and other.suffix == ".csv"
        assert free_name(tmp_path / "selection.csv", [template]) == tmp_path / "selection.csv"


class TestOneJobPerFolder:
    def test_a_second_process_is_refused_while_a_job_runs(self, tmp_path: Path) -> None:
        script = f"from pathlib import Path; from imgselect.run.jobfolder import job_lock, JobBusy\ntry:\n    with job_lock(Path({str(tmp_path)!r})): pass\nexcept JobBusy as e:\n    print('BUSY', e)\n"
        with job_lock(tmp_path):
            busy = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
        assert (
            busy.stdout.startswith("BUSY")
            and str(os.getpid()) in busy.stdout
            and str(tmp_path) in busy.stdout
        )
        free = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
        assert free.returncode == 0 and "BUSY" not in free.stdout  # released with the job

    def test_the_same_process_cannot_enter_twice(self, tmp_path: Path) -> None:
        with job_lock(tmp_path), pytest.raises(JobBusy), job_lock(tmp_path):
            pass

    def test_an_unwritable_folder_is_named(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")  # a folder under a regular file cannot be made, even by root
        with pytest.raises(PermissionError, match=f"{blocker / 'job'}.*hydra.run.dir"):
            check_writable(blocker / "job", "the job folder", "run it elsewhere (hydra.run.dir=...)")


def _kill_the_sweep(sweep: str, pidfile: Path) -> None:
    """Run ``sweep`` (a script whose worker writes its pid to ``pidfile``), SIGKILL it once the worker is up,
    and fail unless the worker is gone within 10 s."""
    proc = subprocess.Popen([sys.executable, "-c", sweep], cwd=ROOT)
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _ in range(100):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        pytest.fail("the worker outlived its sweep by 10 s")
    finally:
        proc.kill()


def test_a_worker_ends_when_its_sweep_is_killed(tmp_path: Path) -> None:
    """A sweep process starts a worker that watches it; SIGKILL of the sweep ends the worker within seconds
    (before the fix the worker ran on and wrote its result after the sweep had died)."""
    pidfile, done = tmp_path / "worker.pid", tmp_path / "worker.done"
    sweep = textwrap.dedent(f"""
        import multiprocessing as mp, time
        from pathlib import Path

        def job():
            import os
            from imgselect.run.jobfolder import die_with_parent
            die_with_parent(interval=0.1)
            Path({str(pidfile)!r}).write_text(str(os.getpid()))
            time.sleep(8)
            Path({str(done)!r}).write_text("finished after the sweep died")

        if __name__ == "__main__":
            mp.Process(target=job).start()
            time.sleep(60)
    """)
    _kill_the_sweep(sweep, pidfile)
    time.sleep(0.5)
    assert not done.exists()


class TestChecksBeforeTraining:
    def test_words_for_numbers_are_named(self) -> None:
        with pytest.raises(ValueError, match=r"budget='ten' must be a whole number \(e.g. budget=125\)"):
            check_numbers({"budget": "ten", "seed": 0})
        with pytest.raises(ValueError, match="folds=True"):
            check_numbers({"folds": True})
        check_numbers({"budget": 125, "pseudo.size": None})

    def test_missing_and_unsafe_weights_fail_first(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"classifier.pretrained=.*nope.pth: no such file"):
            check_input_files({"classifier.pretrained": [tmp_path / "nope.pth"]})
        evil = tmp_path / "evil.pth"
        torch.save({"w": torch.zeros(2), "code": os.system}, evil)  # unpickling would import a function
        with pytest.raises(
            ValueError, match=r"classifier.pretrained=.*evil.pth cannot be read.*weights file"
        ):
            check_input_files({"classifier.pretrained": [evil]})
        good = tmp_path / "good.pth"
        torch.save({"w": torch.zeros(2)}, good)
        check_input_files({"classifier.pretrained": [good]})

    def test_pickled_embeddings_and_bad_labels_fail_first(self, tmp_path: Path) -> None:
        emb = tmp_path / "emb.npy"
        np.save(emb, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        with pytest.raises(ValueError, match=r"embedding.path=.*emb.npy cannot be read"):
            check_input_files({"embedding.path": [emb]})
        export = tmp_path / "export.json"
        export.write_text("{not json")
        with pytest.raises(ValueError, match="export.json"):
            check_input_files({"labels.path": [export]})

    def test_image_size_against_the_autoencoder(self) -> None:
        with pytest.raises(ValueError, match="image_size=36 must be a multiple of 8"):
            check_image_size(36, 3)
        check_image_size(32, 2)


def test_a_worker_does_not_start_a_job_after_its_sweep_was_killed(tmp_path: Path) -> None:
    """A worker that takes up a job only after the sweep's process died (found by killing a real
    hydra/launcher=parallel sweep before its jobs began: the orphaned workers then ran every job) ends at once."""
    ready, ran = tmp_path / "ready", tmp_path / "ran"
    sweep = textwrap.dedent(f"""
        import multiprocessing as mp, time
        from pathlib import Path

        def job():
            import os
            Path({str(ready)!r}).write_text(str(os.getpid()))
            while os.getppid() == mp.parent_process().pid:  # the job starts once the sweep is gone
                time.sleep(0.05)
            from imgselect.run.jobfolder import die_with_parent
            die_with_parent(interval=0.1)
            Path({str(ran)!r}).write_text("ran after the sweep died")

        if __name__ == "__main__":
            mp.Process(target=job).start()
            time.sleep(60)
    """)
    _kill_the_sweep(sweep, ready)
    assert not ran.exists()

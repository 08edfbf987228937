"""What a job's folder promises across re-runs: the job's identity includes its input files, a person's
files are never overwritten, earlier outputs are kept, and one folder runs one job at a time.

* **Inputs** (:func:`input_paths`, :func:`input_digests`): the files and folders a job reads, named by the
  config keys in :data:`INPUT_KEYS` (the labels files, an embedding file, pretrained weights, the pool folder,
  the validation set, videos, a detector). Their digests go into ``result.json``; a re-run whose inputs changed
  (a label edited, images added to the pool) runs again instead of resuming.
* **Earlier outputs** (:func:`keep_earlier_outputs`): when a job runs again in a folder that holds an earlier
  selection, that selection's files (``selection.csv``, ``labels_template.csv``, ``label_studio/``, the
  pictures, a killed run's W&B folders, ...) move into ``earlier/<time>/`` before anything is written. A file
  this run reads (``labels.path`` inside the folder) is copied there instead and stays where it is; the new
  template is then written under another name (:func:`free_name`), so a person's labels are never overwritten.
* **One job per folder** (:func:`job_lock`): a job holds ``.job.lock`` while it runs; a second process (a
  resume started while a killed sweep's worker still runs) fails at once instead of writing into the same
  folder.
* **Workers die with their sweep** (:func:`die_with_parent`): a job in a worker process of a parallel sweep
  ends itself when the sweep's process is gone (killed), instead of finishing unseen.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from imgselect.io.cache import cache_key

log = logging.getLogger(__name__)

# Config keys whose values name files or folders the job reads. Values that are no path ("hub", "ssl", "subfolders")
# are ignored.
INPUT_KEYS = (
    "labels.path",
    "embedding.path",
    "embedding.ids",
    "embedding.weights",
    "classifier.pretrained",
    "data.pool_dir",
    "data.pool_labels",
    "data.val",
    "data.path",
    "data.detector.model",
)
NOT_PATHS = {"hub", "ssl", "subfolders", "", "???"}
# Files above this size are identified by size and modification time instead of their bytes (a 2 GB
# embedding file would take seconds to hash at every resume check).
HASH_LIMIT = 512 * 2**20
# What a selecting job writes into its folder; an earlier run's copies go to earlier/<time>/.
EARLIER_OUTPUTS = (
    "selection.csv",
    "selection.png",
    "labels_template.csv",
    "label_studio",
    "embedding_map.png",
    "duplicates.csv",
    "manifest.csv",
    "skipped.csv",
    "confusion.png",
    "reconstructions.png",
    "embeddings.npy",
    "embeddings.ids.txt",
)
EARLIER_DIR = "earlier"
LOCK_FILE = ".job.lock"


def input_paths(cfg: DictConfig) -> dict[str, list[Path]]:
    """The files and folders named by the config's :data:`INPUT_KEYS` (absolute), by key."""
    out: dict[str, list[Path]] = {}
    for key in INPUT_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        values = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
        paths = [Path(str(v)).expanduser().absolute() for v in values if str(v) not in NOT_PATHS]
        if paths:
            out[key] = paths
    return out


def _file_digest(path: Path) -> str:
    st = path.stat()
    if st.st_size > HASH_LIMIT:
        return f"size={st.st_size},mtime={st.st_mtime_ns}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _folder_digest(folder: Path) -> str:
    """Every file under ``folder`` (symlinked folders followed once each): relative path, size, mtime."""
    listing: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop or a second link to a folder already listed
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            try:
                st = p.stat()
            except OSError:  # a broken link: listed without size
                listing.append((str(p.relative_to(folder)), -1, -1))
                continue
            listing.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return cache_key(files=listing)


def path_digest(path: Path) -> str:
    """A short identity of a file (its bytes) or a folder (its listing); ``missing`` when absent."""
    try:
        if path.is_dir():
            return _folder_digest(path)
        if path.is_file():
            return _file_digest(path)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    return "missing"


def input_digests(cfg: DictConfig) -> dict[str, str]:
    """``{"labels.path": "<digest>", "data.pool_dir": "<digest>", ...}`` for :func:`input_paths`; a list of
    files gets one digest of theirs."""
    out = {}
    for key, paths in input_paths(cfg).items():
        digests = [path_digest(p) for p in paths]
        out[key] = digests[0] if len(digests) == 1 else cache_key(files=digests)
    return out


def _protected(out_dir: Path, inputs: Collection[Path]) -> set[Path]:
    """The inputs that lie inside ``out_dir`` (resolved), files and the files under folders."""
    root = out_dir.resolve()
    kept: set[Path] = set()
    for p in inputs:
        r = p.resolve()
        if r == root or root not in r.parents:
            continue
        kept.update([r] if r.is_file() else (f.resolve() for f in r.rglob("*") if f.is_file()))
    return kept


def keep_earlier_outputs(out_dir: Path, inputs: Collection[Path]) -> Path | None:
    """Move an earlier run's outputs (:data:`EARLIER_OUTPUTS`, ``result.stale-*.json``, W&B run folders) into
    ``out_dir/earlier/<time>/``; inputs of this run found among them (``inputs``) are copied, not moved.
    Returns the folder, or ``None`` when there was nothing to keep."""
    names = [out_dir / n for n in EARLIER_OUTPUTS if (out_dir / n).exists()]
    names += sorted(out_dir.glob("result.stale-*.json")) + sorted(out_dir.glob("labels_template-*.csv"))
    wandb = out_dir / "wandb"
    if wandb.is_dir():  # a killed run's folder (a header-only .wandb file) would be picked up by `wandb sync`
        names += sorted(p for p in wandb.glob("*run-*") if p.is_dir())
    if not names:
        return None
    protected = _protected(out_dir, inputs)
    dest = out_dir / EARLIER_DIR / time.strftime("%Y%m%d-%H%M%S")
    while dest.exists():  # two runs in one second
        dest = dest.with_name(dest.name + "_")
    for src in names:
        target = dest / src.relative_to(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        inside = [f for f in protected if f == src.resolve() or src.resolve() in f.parents]
        if not inside:
            shutil.move(src, target)
        elif src.is_file():
            shutil.copy2(src, target)
        else:  # a folder holding an input: copy it whole, then remove what this run does not read
            shutil.copytree(src, target)
            for f in sorted(src.rglob("*"), reverse=True):
                if f.is_file() and f.resolve() not in protected:
                    f.unlink()
                elif f.is_dir() and not any(f.iterdir()):
                    f.rmdir()
    log.warning(
        "%s held an earlier run's outputs: kept in %s (files this run reads stay where they are)",
        out_dir, dest.relative_to(out_dir),
    )  # fmt: skip
    return dest


def free_name(path: Path, keep: Collection[Path]) -> Path:
    """``path``, or ``<stem>-<time><suffix>`` beside it when ``path`` is one of ``keep`` (a file of a person's
    that this run reads, which it must not overwrite)."""
    kept = {p.resolve() for p in keep}
    if path.resolve() not in kept:
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    other = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    log.warning(
        "%s holds labels this run reads: it is left as it is, and the new file is %s", path, other.name
    )
    return other


class JobBusy(RuntimeError):
    """Another process is running a job in the same folder."""


@contextmanager
def job_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.job.lock`` while the block runs; :class:`JobBusy` at once when another process holds
    it. The lock goes with the process (a killed job leaves no stale lock)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise JobBusy(
                f"another process (pid {holder}) is running a job in {out_dir}: wait for it to finish (or end "
                f"it), then run again; this run writes nothing there"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_writable(folder: Path, what: str, fix: str) -> None:
    """Raise ``PermissionError`` naming ``folder`` and ``fix`` when files cannot be created there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write into {what} {folder} ({err.strerror or err}): {fix}") from None


def in_worker_process() -> bool:
    """True in a process a launcher started with multiprocessing (joblib's loky workers): its parent is the
    sweep."""
    import multiprocessing

    return multiprocessing.parent_process() is not None


def die_with_parent(interval: float = 0.5, sig: int = signal.SIGKILL) -> threading.Thread:
    """End this process with ``sig`` once the process that started it is gone: at once when it is already gone
    (a worker that picks up a job after its sweep was killed), else from a daemon thread that watches it. A
    killed sweep leaves no worker finishing, or starting, its jobs."""
    import multiprocessing

    started_by = multiprocessing.parent_process()
    # the pid of the process that started this one, even when this one was already handed to another parent
    parent = started_by.pid if started_by is not None and started_by.pid else os.getppid()

    def gone() -> bool:
        return os.getppid() != parent

    def end() -> None:
        log.error("the sweep's process (pid %d) is gone: this job ends too", parent)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), sig)

    if gone():
        end()

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        end()

    thread = threading.Thread(target=watch, name="die-with-parent", daemon=True)
    thread.start()
    return thread


def describe_changes(before: dict[str, Any], now: dict[str, str]) -> list[str]:
    """The input keys whose digest differs between a finished result's and now."""
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))

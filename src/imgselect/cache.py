"""The cache of trained models and embeddings: keys from everything that changes the result, folders
written atomically so concurrent jobs never see (or leave) half a cache entry.

From the command line::

    python -m imgselect.cache list  [--cache-dir DIR] [--kind embeddings/autoencoder ...]
    python -m imgselect.cache clear [--cache-dir DIR] [--kind ...] --yes
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB chunks: weight files, detectors and datasets in cache
    keys and checks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """A short hash of ``parts`` (JSON-serialisable values, order of keywords irrelevant)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CacheEntry:
    """One cache folder, ``root / kind / key``, holding the files named in ``required`` once complete.

    Args:
        root: the cache root (``paths.cache_dir``).
        kind: a sub-folder per kind of artifact (``embeddings/pixels``, ...).
        key: see :func:`cache_key`.
        required: file names that make an entry complete.
    """

    def __init__(self, root: str | Path, kind: str, key: str, required: Sequence[str]) -> None:
        self.path = Path(root) / kind / key
        self.key = key
        self.required = tuple(required)

    def complete(self) -> bool:
        return all((self.path / name).exists() for name in self.required)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on this entry (a ``.<key>.lock`` file beside it) for the ``with`` block:
        jobs that would build the same entry wait for the first one's instead of all building it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.key}.lock")
        with lock_path.open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another job to finish the cache entry %s", self.path)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield a private temporary folder; on success it becomes the entry in one rename.

        When another job completed the same entry meanwhile, its copy is kept and ours is dropped (the
        same key means the same content).
        """
        tmp = self.path.with_name(f".{self.key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            missing = [n for n in self.required if not (tmp / n).exists()]
            if missing:
                raise RuntimeError(f"cache entry {self.path} incomplete: {missing} were not written")
            if self.path.exists() and not self.complete():
                shutil.rmtree(self.path, ignore_errors=True)  # a stale, partial entry of an older version
            try:
                os.rename(tmp, self.path)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not self.complete():
                    raise
                log.info("cache entry %s was written by another job meanwhile; keeping that one", self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Place ``src`` at ``dst`` as a hard link (no extra disk), else as a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: copy beside the target, then rename (never a partial file)
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)


# The cache from the command line: python -m imgselect.cache list|clear

STALE_TMP_S = 3600  # an unfinished entry folder older than this was left by a killed job


@dataclass
class ListedEntry:
    """A cache entry (or an unfinished one, being written or left by a killed job) as the CLI shows it."""

    kind: str
    key: str
    path: Path
    files: list[str]
    size: int  # bytes
    linked: int  # bytes in files hard-linked elsewhere too (run folders): clearing does not free them
    mtime: float
    unfinished: bool = False


def _describe(path: Path, kind: str, key: str, unfinished: bool) -> ListedEntry:
    files, size, linked = [], 0, 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        files.append(str(f.relative_to(path)))
        size += st.st_size
        linked += st.st_size if st.st_nlink > 1 else 0
    return ListedEntry(kind, key, path, files, size, linked, path.stat().st_mtime, unfinished)


def list_entries(root: str | Path, kinds: Sequence[str] = ()) -> list[ListedEntry]:
    """Every entry under ``root``, by kind then date; ``kinds`` keeps those of these kinds (a kind also
    matches the kinds below it: ``embeddings`` matches ``embeddings/autoencoder``).

    An entry is a folder holding files (``root/<kind>/<key>/``); a kind is a folder of entries and may be
    nested (``embeddings/pixels``). Dot-folders ending in ``.tmp`` are unfinished entries (see
    :meth:`CacheEntry.writing`).
    """
    root = Path(root)
    out: list[ListedEntry] = []

    def walk(folder: Path) -> None:
        kind = str(folder.relative_to(root)).replace(os.sep, "/")
        for child in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                if child.name.startswith("."):
                    if child.name.endswith(".tmp"):
                        out.append(_describe(child, kind, child.name, unfinished=True))
                elif any(p.is_file() and not p.name.startswith(".") for p in child.iterdir()):  # not a lock
                    out.append(_describe(child, kind, child.name, unfinished=False))
                else:
                    walk(child)
            except FileNotFoundError:  # renamed or removed by a job meanwhile
                continue

    if root.is_dir():
        walk(root)
    wanted = [k.strip("/") for k in kinds]
    return sorted(
        (e for e in out if not wanted or any(e.kind == k or e.kind.startswith(k + "/") for k in wanted)),
        key=lambda e: (e.kind, e.mtime),
    )


def remove_entry(path: Path) -> None:
    """Delete one entry: first renamed out of the way in one step (a job never sees half of it), then removed."""
    gone = path.with_name(f".{path.name.lstrip('.')}.deleting.{uuid.uuid4().hex[:8]}.tmp")
    os.rename(path, gone)
    shutil.rmtree(gone)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _print_table(entries: Sequence[ListedEntry]) -> None:
    rows = [
        (
            e.kind,
            e.key + (" (unfinished)" if e.unfinished else ""),
            _size(e.size),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime)),
            ", ".join(e.files) or "-",
        )
        for e in entries
    ]
    header = ("kind", "key", "size", "date", "files")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])


def _summary(entries: Sequence[ListedEntry], root: Path) -> str:
    size = sum(e.size for e in entries)
    linked = sum(e.linked for e in entries)
    also = f" ({_size(linked)} of it also hard-linked from run folders)" if linked else ""
    n = len(entries)
    return f"{n} {'entry' if n == 1 else 'entries'}, {_size(size)} in {root}{also}"


def default_cache_dir() -> Path:
    """``paths.cache_dir`` of ``conf/paths/default.yaml``: ``$IMGSELECT_ROOT/.cache/imgselect`` (else ``./``)."""
    return Path(os.environ.get("IMGSELECT_ROOT", ".")) / ".cache" / "imgselect"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m imgselect.cache list|clear [--cache-dir DIR] [--kind KIND ...] [--yes]``."""
    parser = argparse.ArgumentParser(
        prog="python -m imgselect.cache",
        description="List or clear the cache of embeddings and trained models.",
    )
    parser.add_argument("command", choices=["list", "clear"])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="the cache root (default: paths.cache_dir, .cache/imgselect)",
    )
    parser.add_argument(
        "--kind",
        nargs="+",
        default=[],
        help="only these kinds, e.g. embeddings/autoencoder (embeddings: every embedding)",
    )
    parser.add_argument("--yes", action="store_true", help="clear: really delete (without it, only list)")
    args = parser.parse_args(argv)
    root: Path = args.cache_dir or default_cache_dir()
    if not root.is_dir():
        print(f"no cache at {root} (nothing to {args.command})")
        return 0
    entries = list_entries(root, args.kind)
    if not entries:
        known = ", ".join(sorted({e.kind for e in list_entries(root)})) or "none"
        wanted = f" of kind {', '.join(args.kind)}" if args.kind else ""
        print(f"no cache entries{wanted} in {root} (kinds there: {known})")
        return 0
    if args.command == "list":
        _print_table(entries)
        print(_summary(entries, root))
        return 0

    now = time.time()
    recent = [e for e in entries if e.unfinished and now - e.mtime < STALE_TMP_S]
    doomed = [e for e in entries if not (e.unfinished and now - e.mtime < STALE_TMP_S)]
    if recent:
        print(
            f"keeping {len(recent)} unfinished entries (folders) younger than {STALE_TMP_S // 60} min (a job may be writing them)"
        )
    if not doomed:
        return 0
    if not args.yes:
        _print_table(doomed)
        print(_summary(doomed, root))
        print("nothing deleted: add --yes to delete these entries")
        return 1
    for e in doomed:
        try:
            remove_entry(e.path)
        except FileNotFoundError:  # a job completed (renamed) or another clear removed it meanwhile
            print(f"{e.path} is gone already")
    print(f"deleted {_summary(doomed, root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cache of trained models and embeddings: keys from everything that changes the result, folders
written atomically so concurrent jobs never see (or leave) half a cache entry.

From the command line::

    python -m imgselect.io.cache list  [--cache-dir DIR] [--kind embeddings/autoencoder ...]
    python -m imgselect.io.cache clear [--cache-dir DIR] [--kind ...] --yes

The cache marks its root with a ``CACHEDIR.TAG`` file (the standard tag, which also tells backup tools to
skip the folder); ``clear`` deletes only in a folder so marked, and only entries of the kinds imgselect
writes, so a mistyped ``--cache-dir`` never deletes a person's own folders.
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
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "CACHEDIR.TAG"
MARKER_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"  # https://bford.info/cachedir/
MARKER_TEXT = (
    f"{MARKER_SIGNATURE}\n"
    "# This file is a cache directory tag created by imgselect: its trained models, embeddings and decoded\n"
    "# pools, which `python -m imgselect.io.cache clear` may delete. For cache directory tags see\n"
    "# https://bford.info/cachedir/\n"
)
# The top-level folders the cache writes: embeddings/<name> (stages/embed.py), pools (poolstore.py),
# video_crops (video.py, data.crops_dir by default) and autoencoder (the layout before embeddings/<name>)
KINDS = ("autoencoder", "embeddings", "pools", "video_crops")


class CacheNotWritable(OSError):
    """The cache folder cannot be written (read-only, not a folder, no permission, disk full)."""


def not_writable(root: Path, error: OSError) -> CacheNotWritable:
    """The error that says which cache folder could not be written, why, and what to do."""
    where = f" ({error.filename})" if error.filename else ""
    return CacheNotWritable(
        f"cannot write to the cache folder {root}: {error.strerror or error}{where}. Give a writable folder "
        f"(paths.cache_dir=<writable folder>), or run without the cache (cache=false)"
    )


def is_marked(root: Path) -> bool:
    """Whether ``root`` holds imgselect's ``CACHEDIR.TAG`` (another program's tag is not imgselect's)."""
    try:
        text = (root / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return text.startswith(MARKER_SIGNATURE) and "imgselect" in text


def mark_cache(root: Path) -> None:
    """Write the ``CACHEDIR.TAG`` at ``root`` unless it is there (written whole: beside it, then renamed)."""
    marker = root / MARKER
    if marker.is_file():
        return
    tmp = root / f".{MARKER}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(MARKER_TEXT, encoding="utf-8")
        os.replace(tmp, marker)
    finally:
        tmp.unlink(missing_ok=True)


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
        self.root = Path(root)
        self.path = self.root / kind / key
        self.key = key
        self.required = tuple(required)

    def complete(self) -> bool:
        return all((self.path / name).exists() for name in self.required)

    def _make_folder(self) -> None:
        """Create the entry's kind folder and mark the cache root (see :func:`mark_cache`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mark_cache(self.root)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on this entry (a ``.<key>.lock`` file beside it) for the ``with`` block:
        jobs that would build the same entry wait for the first one's instead of all building it.

        In a cache folder that cannot be written, a complete entry is read without a lock (nothing is
        written); an entry still to build raises :class:`CacheNotWritable`.
        """
        lock_path = self.path.with_name(f".{self.key}.lock")
        try:
            self._make_folder()
            f = lock_path.open("a")
        except OSError as e:
            if not self.complete():
                raise not_writable(self.root, e) from e
            log.info(
                "cache folder %s is not writable (%s); reading %s without a lock", self.root, e, self.path
            )
            yield
            return
        with f:
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
        try:
            self._make_folder()
            tmp.mkdir()
        except OSError as e:
            raise not_writable(self.root, e) from e
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


# The cache from the command line: python -m imgselect.io.cache list|clear

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


def known_kind(kind: str) -> bool:
    """Whether entries of ``kind`` (``list_entries``' kind: ``pools``, ``embeddings/pixels``, ...) are ones
    the cache writes: ``clear`` deletes only these."""
    top, _, rest = kind.partition("/")
    if top == "embeddings":  # embeddings/<embedding name>/<key>
        return bool(rest) and "/" not in rest
    return top in KINDS and not rest


def _foreign_children(root: Path) -> list[str]:
    """The names at ``root`` the cache does not write (anything but its kind folders and its marker)."""
    return sorted(
        c.name
        for c in root.iterdir()
        if not (c.name == MARKER or c.name.startswith(f".{MARKER}.") or (c.name in KINDS and c.is_dir()))
    )


def _clear_refusal(root: Path) -> str | None:
    """Why ``clear`` must not delete in ``root`` (``None``: it may).

    A folder with imgselect's ``CACHEDIR.TAG`` is a cache. A folder without it is accepted only when every
    name in it is a kind folder the cache writes (a cache made before the tag existed); it is then marked.
    """
    if is_marked(root):
        return None
    what = f"give the cache folder with --cache-dir (paths.cache_dir, by default {default_cache_dir()})"
    if (root / MARKER).exists():
        return (
            f"{root} is not an imgselect cache: its {MARKER} was written by another program. Nothing deleted; "
            f"{what}"
        )
    foreign = _foreign_children(root)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        return (
            f"{root} is not an imgselect cache: it has no {MARKER} and holds what the cache never writes "
            f"({shown}; the cache writes only {', '.join(KINDS)}). Nothing deleted; {what}"
        )
    if any(root.iterdir()):
        try:
            mark_cache(root)
            print(f"{root}: a cache made before {MARKER} existed; marked it as imgselect's cache")
        except OSError as e:  # clearing may still work (a folder without write permission fails below)
            print(f"{root}: a cache made before {MARKER} existed; could not mark it ({e})")
    return None


def default_cache_dir() -> Path:
    """``paths.cache_dir`` of ``conf/paths/default.yaml``: ``$IMGSELECT_ROOT/.cache/imgselect`` (else ``./``)."""
    return Path(os.environ.get("IMGSELECT_ROOT", ".")) / ".cache" / "imgselect"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m imgselect.io.cache list|clear [--cache-dir DIR] [--kind KIND ...] [--yes]``."""
    parser = argparse.ArgumentParser(
        prog="python -m imgselect.io.cache",
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
    if args.command == "clear":
        refusal = _clear_refusal(root)
        if refusal:
            print(refusal, file=sys.stderr)
            return 2
    entries = list_entries(root, args.kind)
    if args.command == "clear":  # only what the cache writes, even in a cache folder
        foreign = _foreign_children(root)
        foreign += [  # inside the kind folders (a folder at the top is named once, above)
            rel
            for rel in (str(e.path.relative_to(root)) for e in entries if not known_kind(e.kind))
            if rel.split(os.sep)[0] not in foreign
        ]
        if foreign:
            shown = ", ".join(foreign[:10]) + (" ..." if len(foreign) > 10 else "")
            print(f"leaving alone {len(foreign)} things in {root} the cache did not write: {shown}")
        entries = [e for e in entries if known_kind(e.kind)]
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

"""The cache of trained models and embeddings: keys from everything that changes the result, folders
written atomically so concurrent jobs never see (or leave) half a cache entry."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
    except OSError:
        shutil.copyfile(src, dst)

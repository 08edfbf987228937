"""The cache CLI (python -m imgselect.cache list|clear) on a cache made with CacheEntry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgselect.cache import CacheEntry, cache_key, list_entries, main


def _entry(root: Path, kind: str, n_bytes: int, **key: object) -> CacheEntry:
    entry = CacheEntry(root, kind, cache_key(**key), ["embeddings.npy", "meta.json"])
    with entry.writing() as tmp:
        (tmp / "embeddings.npy").write_bytes(b"x" * n_bytes)
        (tmp / "meta.json").write_text("{}")
    return entry


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, CacheEntry]:
    root = tmp_path / "cache"
    return {
        "ae": _entry(root, "embeddings/autoencoder", 3000, seed=0),
        "ae1": _entry(root, "embeddings/autoencoder", 3000, seed=1),
        "px": _entry(root, "embeddings/pixels", 1000, size=16),
    }


def _root(cache: dict[str, CacheEntry]) -> Path:
    return cache["ae"].path.parents[2]  # root / embeddings / autoencoder / key


class TestList:
    def test_lists_every_entry_with_sizes_and_total(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = _root(cache)
        assert main(["list", "--cache-dir", str(root)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["kind", "key", "size", "date", "files"]
        assert sorted(line.split()[1] for line in out[1:4]) == sorted(e.key for e in cache.values())
        px = next(line for line in out if cache["px"].key in line)
        assert (
            px.split()[0] == "embeddings/pixels"
            and "1002 B" in px
            and px.endswith("embeddings.npy, meta.json")
        )
        assert out[-1] == f"3 entries, 6.8 KB in {root}"

    def test_kind_filter_and_hard_links(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = _root(cache)
        os.link(
            cache["px"].path / "embeddings.npy", root.parent / "run_embeddings.npy"
        )  # as a run folder does
        assert main(["list", "--cache-dir", str(root), "--kind", "embeddings/pixels"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert (
            len(out) == 3
            and out[-1] == f"1 entry, 1002 B in {root} (1000 B of it also hard-linked from run folders)"
        )
        assert main(["list", "--cache-dir", str(root), "--kind", "embeddings"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("3 entries")
        assert main(["list", "--cache-dir", str(root), "--kind", "autoencoder"]) == 0
        assert "no cache entries of kind autoencoder" in capsys.readouterr().out

    def test_no_cache_folder(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["list", "--cache-dir", str(tmp_path / "none")]) == 0
        assert "no cache at" in capsys.readouterr().out


class TestClear:
    def test_refuses_without_yes(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["clear", "--cache-dir", str(_root(cache))]) == 1
        assert "nothing deleted: add --yes" in capsys.readouterr().out
        assert all(e.complete() for e in cache.values())

    def test_clears_one_kind(self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]) -> None:
        root = _root(cache)
        assert main(["clear", "--cache-dir", str(root), "--kind", "embeddings/autoencoder", "--yes"]) == 0
        assert capsys.readouterr().out.startswith("deleted 2 entries, 5.9 KB")
        assert not cache["ae"].path.exists() and not cache["ae1"].path.exists() and cache["px"].complete()
        assert [e.key for e in list_entries(root)] == [cache["px"].key]  # nothing half-deleted left behind

    def test_clears_all_but_unfinished_entries_a_job_may_be_writing(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = _root(cache)
        writing = root / "embeddings/pixels/.abc.123.deadbeef.tmp"  # as CacheEntry.writing names it
        writing.mkdir()
        (writing / "embeddings.npy").write_bytes(b"x")
        killed = root / "embeddings/pixels/.abd.124.deadbeef.tmp"
        killed.mkdir()
        (killed / "embeddings.npy").write_bytes(b"x")
        old = time.time() - 2 * 3600
        os.utime(killed, (old, old))
        assert main(["clear", "--cache-dir", str(root), "--yes"]) == 0
        assert "keeping 1 unfinished entries (folders) younger than 60 min" in capsys.readouterr().out
        assert writing.exists() and not killed.exists()
        assert [e.key for e in list_entries(root)] == [writing.name]


def test_runs_as_a_module(cache: dict[str, CacheEntry]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgselect.cache", "list", "--cache-dir", str(_root(cache))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("3 entries")

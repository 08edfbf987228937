"""The cache CLI (python -m imgselect.io.cache list|clear) on a cache made with CacheEntry."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgselect.io.cache import MARKER, CacheEntry, CacheNotWritable, cache_key, is_marked, list_entries, main


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


def _folder_with_files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("a person's file")


class TestOnlyWhatTheCacheWrote:
    def test_entries_mark_the_cache_root(self, cache: dict[str, CacheEntry]) -> None:
        text = (_root(cache) / MARKER).read_text()
        assert text.startswith("Signature: 8a477f597d28d172789f06886806bc55") and is_marked(_root(cache))

    def test_clear_refuses_an_ordinary_folder(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        home = tmp_path / "home"
        _folder_with_files(home / "Documents", "letter.txt")
        _folder_with_files(home / "Photos", "a.jpg")
        _folder_with_files(home / "pools", "x.bin")  # a known name is not enough beside unknown ones
        assert main(["clear", "--cache-dir", str(home), "--yes"]) == 2
        err = capsys.readouterr().err
        assert f"{home} is not an imgselect cache" in err and "Documents, Photos" in err
        assert "Nothing deleted" in err and "pools" not in err.split("(")[1].split(";")[0]
        assert (home / "Documents/letter.txt").exists() and (home / "Photos/a.jpg").exists()
        assert (home / "pools/x.bin").exists() and not (home / MARKER).exists()

    def test_clear_refuses_another_programs_cache_tag(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        target = tmp_path / "target"
        _folder_with_files(target / "pools", "x.bin")
        (target / MARKER).write_text("Signature: 8a477f597d28d172789f06886806bc55\n# made by cargo\n")
        assert main(["clear", "--cache-dir", str(target), "--yes"]) == 2
        assert "written by another program" in capsys.readouterr().err
        assert (target / "pools/x.bin").exists()

    def test_clear_in_a_cache_deletes_only_known_kinds(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = _root(cache)
        _folder_with_files(root / "Documents", "letter.txt")  # put there by hand
        _folder_with_files(root / "embeddings/pixels/notes/deeper", "n.txt")  # not an entry of a kind
        assert main(["clear", "--cache-dir", str(root), "--yes"]) == 0
        out = capsys.readouterr().out
        assert f"leaving alone 2 things in {root} the cache did not write: Documents, " in out
        assert "deleted 3 entries" in out
        assert (root / "Documents/letter.txt").exists()
        assert (root / "embeddings/pixels/notes/deeper/n.txt").exists()
        assert not any(e.path.exists() for e in cache.values())

    def test_cache_made_before_the_marker_is_cleared_and_marked(
        self, cache: dict[str, CacheEntry], capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = _root(cache)
        (root / MARKER).unlink()
        _folder_with_files(root / "pools" / cache_key(n=1), "images.u8", "meta.json")
        assert main(["clear", "--cache-dir", str(root), "--yes"]) == 0
        out = capsys.readouterr().out
        assert "marked it as imgselect's cache" in out and "deleted 4 entries" in out
        assert is_marked(root) and list_entries(root) == []


class TestUnwritableCache:
    def test_cache_folder_under_a_file_names_it_and_what_to_do(self, tmp_path: Path) -> None:
        (tmp_path / "afile").write_text("")
        root = tmp_path / "afile" / "cache"  # as root too, nothing can be created under a regular file
        entry = CacheEntry(root, "pools", "k", ["a"])
        says = rf"cannot write to the cache folder {re.escape(str(root))}: Not a directory.*"
        says += r"paths.cache_dir=<writable folder>.*cache=false"
        with pytest.raises(CacheNotWritable, match=says), entry.lock():
            pass
        with pytest.raises(CacheNotWritable, match=says), entry.writing():
            pass

    def test_read_only_cache_reads_finished_entries_and_says_what_to_do_for_new_ones(
        self, cache: dict[str, CacheEntry], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A read-only file system (root ignores chmod, so EROFS is raised by patched calls)."""

        def read_only(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

        real_open = Path.open

        def open_read_only(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
            if set(mode) & set("wax+"):
                read_only(self)
            return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(os, "mkdir", read_only)
        monkeypatch.setattr(Path, "open", open_read_only)
        with cache["px"].lock():  # finished: read without a lock
            assert (cache["px"].path / "embeddings.npy").read_bytes() == b"x" * 1000
        new = CacheEntry(_root(cache), "embeddings/pixels", cache_key(size=99), ["embeddings.npy"])
        says = r"Read-only file system.*paths.cache_dir=.*cache=false"
        with pytest.raises(CacheNotWritable, match=says), new.lock():
            pass


def test_runs_as_a_module(cache: dict[str, CacheEntry]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgselect.io.cache", "list", "--cache-dir", str(_root(cache))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("3 entries")

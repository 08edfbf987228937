"""Packaging: the wheel ships conf/ and the console scripts, the locks agree with pyproject.toml and with each
other (one FAISS build each), and the Makefile installs one FAISS build, never both."""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import CONF, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = {"imgselect-train": "imgselect.run.cli:train", "imgselect-report": "imgselect.report:main"}
FAISS_BUILDS = {"faiss-cpu", "faiss-gpu-cu12"}
# lock -> (the extras it was compiled with, its FAISS build)
LOCKS = {
    "requirements.lock": (["cpu"], "faiss-cpu"),
    "requirements-dev.lock": (["cpu", "dev", "slurm", "joblib"], "faiss-cpu"),
    "requirements-gpu.lock": (["gpu"], "faiss-gpu-cu12"),
    "requirements-dev-gpu.lock": (["gpu", "dev", "slurm", "joblib"], "faiss-gpu-cu12"),
}


def pins(lock: str) -> dict[str, str]:
    """``{normalised name: version}`` of a lock; every requirement line must be an exact ``==`` pin."""
    out: dict[str, str] = {}
    for line in (ROOT / lock).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line)
        assert m, f"{lock}: {line!r} is not an exact pin"
        out[canonicalize_name(m[1])] = m[2]
    return out


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_pins_one_faiss_build_and_every_dependency(lock: str) -> None:
    extras, faiss = LOCKS[lock]
    pinned = pins(lock)
    assert FAISS_BUILDS & set(pinned) == {faiss}
    project = PYPROJECT["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} lacks {req} (run `make lock`)"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}: {name}=={pinned[name]} ∉ {req}"
        )


@pytest.mark.parametrize(
    ("user", "dev"),
    [("requirements.lock", "requirements-dev.lock"), ("requirements-gpu.lock", "requirements-dev-gpu.lock")],
)
def test_user_lock_is_its_dev_lock_without_the_dev_tools(user: str, dev: str) -> None:
    u, d = pins(user), pins(dev)
    assert {k: v for k, v in u.items() if d.get(k) != v} == {}


def test_gpu_locks_differ_only_in_the_faiss_build() -> None:
    """Same pins on a CPU and a GPU machine, but for the FAISS build (and the CUDA 12 libraries it brings)."""
    cpu, gpu = pins("requirements-dev.lock"), pins("requirements-dev-gpu.lock")
    assert set(cpu) - set(gpu) == {"faiss-cpu"}
    assert all(name == "faiss-gpu-cu12" or name.endswith("-cu12") for name in set(gpu) - set(cpu))
    assert {k for k in set(cpu) & set(gpu) if cpu[k] != gpu[k]} == set()


def test_launchers_stay_in_the_dev_lock() -> None:
    """`make install` (the dev lock) brings the Hydra launchers that conf/hydra/launcher/ names."""
    launchers = {"hydra-submitit-launcher", "submitit", "hydra-joblib-launcher"}
    assert launchers <= set(pins("requirements-dev.lock"))


def test_console_scripts_resolve() -> None:
    assert PYPROJECT["project"]["scripts"] == SCRIPTS
    for target in SCRIPTS.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def _copy_project(dest: Path) -> Path:
    """The files a wheel is built from, copied (src/imgselect/conf stays a link to conf/)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("src", "datamodules", "lightning_modules", "conf"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)
    return dest


def test_wheel_ships_conf_and_console_scripts(tmp_path: Path) -> None:
    """The wheel holds imgselect/conf/ (every file of conf/, so an installed imgselect-train composes the same
    jobs) and both console scripts, and installs nothing top-level but the three packages."""
    why = "building the wheel needs setuptools>=77 in the venv (the locks pin it)"
    try:
        setuptools = Version(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{why}; none is installed")
    if setuptools < Version("77"):
        pytest.skip(f"{why}, not {setuptools}")
    project = _copy_project(tmp_path / "project")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(project)],
        cwd=tmp_path,
        check=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("imgselect-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(zf.read(entry_points).decode())
    conf_files = {"imgselect/conf/" + p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    assert "imgselect/conf/train.yaml" in conf_files
    assert conf_files <= names, sorted(conf_files - names)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "imgselect",
        "datamodules",
        "lightning_modules",
    }
    assert dict(scripts["console_scripts"]) == SCRIPTS


def test_train_console_script_composes_the_packaged_conf(tmp_path: Path) -> None:
    """`imgselect-train` from another folder: Hydra's command line over the package's conf/, the job named
    `train` as with train.py (its log: <job>/train.log)."""
    main = "import sys; from imgselect.run.cli import train; sys.argv[0] = 'imgselect-train'; train()"
    out = subprocess.run(
        [sys.executable, "-c", main, "--cfg", "all", "experiment=cpu", "budget=7"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert (cfg.budget, cfg.image_size, cfg.hydra.job.name) == (7, 32, "train")
    (main,) = [source for source in cfg.hydra.runtime.config_sources if source.provider == "main"]
    assert main.path == str(CONF.resolve())


def test_missing_faiss_names_both_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgselect.selection.kmeans import kmeans, require_faiss
    from imgselect.selection.neighbors import flat_index

    # `import faiss` now fails as it does when neither build is installed
    monkeypatch.setitem(sys.modules, "faiss", None)
    x = np.zeros((4, 2), dtype=np.float32)
    for call in (require_faiss, lambda: kmeans(x, 2), lambda: flat_index(x, gpu=False)):
        with pytest.raises(ModuleNotFoundError, match=r"imgselect\[cpu\].*imgselect\[gpu\]"):
            call()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_install_puts_one_faiss_build(tmp_path: Path) -> None:
    """`make install` uses the CPU dev lock, `FAISS=gpu` the GPU one; a switch uninstalls both builds first; a
    venv installed with FAISS=gpu stays GPU."""

    def dry_run(*args: str) -> str:
        cmd = ["make", "-n", "install", f"VENV={tmp_path / 'venv'}", *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    cpu, gpu = dry_run(), dry_run("FAISS=gpu")
    assert "-r requirements-dev.lock" in cpu and "requirements-dev-gpu.lock" not in cpu
    assert "-r requirements-dev-gpu.lock" in gpu and "-r requirements-dev.lock" not in gpu
    assert "show --quiet faiss-gpu-cu12" in cpu and "show --quiet faiss-cpu" in gpu
    assert all("uninstall --quiet --yes faiss-cpu faiss-gpu-cu12" in out for out in (cpu, gpu))
    stamp = tmp_path / "venv" / ".installed-gpu"
    stamp.parent.mkdir()
    stamp.touch()
    os.utime(stamp, (0, 0))  # older than the lock: out of date
    assert "-r requirements-dev-gpu.lock" in dry_run()
    wrong = subprocess.run(["make", "-n", "install", "FAISS=both"], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode != 0 and "FAISS=cpu" in wrong.stderr

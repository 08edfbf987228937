"""Round-trip an imgselect job's Label Studio files through a real Label Studio server, and save its export.

Label Studio lives in a virtualenv of its own (it pins Django and a hundred other packages; never install it
into the project's ``.venv``)::

    python3 -m venv /work/ls-venv && /work/ls-venv/bin/pip install label-studio
    /work/ls-venv/bin/python scripts/label_studio_roundtrip.py tests/fixtures/label_studio/job \\
        --label 1=staff 2=customer 3=staff 4=customer --out tests/fixtures/label_studio/export.json

``JOB`` is an imgselect job folder: ``JOB/label_studio/`` holds ``config.xml`` (the labeling interface),
``tasks.json`` (one task per chosen image, ``data.image`` = ``/data/local-files/?d=images/<file>``) and
``images/``. The script

1. starts ``label-studio start`` on a free local port with a throwaway data dir, local-file serving rooted at
   ``JOB/label_studio`` and a user with a fixed legacy API token (``Authorization: Token ...``);
2. creates a project with ``config.xml`` as its labeling interface and a Local Files storage on
   ``JOB/label_studio/images`` (not synced: Label Studio serves a local file only when a storage of a
   project the user may see covers its folder), and imports ``tasks.json`` (predictions become
   pre-annotations);
3. fetches one task's image through the server and checks it returns the file's bytes;
4. annotates the task whose ``data.tile`` is ``TILE`` with ``CLASS`` for each ``--label TILE=CLASS`` (a
   ``choices`` result named after the config's ``<Choices name=... toName=...>``);
5. exports the project as JSON, unlabeled tasks included, and writes it to ``--out`` exactly as Label Studio
   gave it (only indented); prints a summary and stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LS_DIR = "label_studio"
USER = "roundtrip@imgselect.local"


class RoundTripError(RuntimeError):
    """Something in the round trip did not behave as expected; the message says what."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_label_studio(given: str | None) -> str:
    """The ``label-studio`` command: ``given``, else the one beside this Python, else the one on ``PATH``."""
    if given:
        return given
    beside = Path(sys.executable).parent / "label-studio"
    found = str(beside) if beside.is_file() else shutil.which("label-studio")
    if not found:
        raise RoundTripError(
            f"no label-studio command beside {sys.executable} or on PATH: run this script with the Python of "
            "a virtualenv that has it (python3 -m venv /work/ls-venv && /work/ls-venv/bin/pip install "
            "label-studio), or pass --label-studio PATH"
        )
    return found


def read_choices(config_xml: str) -> tuple[str, str, list[str]]:
    """``(from_name, to_name, choice values)`` of the labeling config's first ``<Choices>``."""
    choices = next(ET.fromstring(config_xml).iter("Choices"), None)
    if choices is None or "name" not in choices.attrib or "toName" not in choices.attrib:
        raise RoundTripError('config.xml has no <Choices name="..." toName="..."> element')
    return (
        choices.attrib["name"],
        choices.attrib["toName"],
        [c.attrib["value"] for c in choices.iter("Choice")],
    )


def parse_labels(pairs: Sequence[str], classes: Sequence[str]) -> dict[int, str]:
    """``["1=staff", ...]`` -> ``{1: "staff", ...}``, each class one of the config's choices."""
    labels: dict[int, str] = {}
    for pair in pairs:
        tile, sep, cls = pair.partition("=")
        if not sep or not tile.strip().isdigit() or not cls:
            raise RoundTripError(f"--label {pair!r}: expected TILE=CLASS, e.g. 1=staff")
        if cls not in classes:
            raise RoundTripError(
                f"--label {pair!r}: {cls!r} is not a choice of config.xml ({', '.join(classes)})"
            )
        labels[int(tile)] = cls
    return labels


class LabelStudio:
    """A ``label-studio start`` subprocess on ``127.0.0.1:<port>`` with its own data dir and API user."""

    def __init__(self, command: str, document_root: Path, workdir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.token = secrets.token_hex(20)
        self.log_path = workdir / "label-studio.log"
        data_dir = workdir / "data"
        env = dict(os.environ)
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
                # 1.2x turned the classic "Token" API keys off for new organizations; the flag below keeps them
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # no calls out: PyPI version check, usage analytics, Sentry
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
            }
        )
        self.args = [
            command, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--username", USER, "--password", secrets.token_hex(12),
            "--user-token", self.token, "--enable-legacy-api-token", "--log-level", "WARNING",
        ]  # fmt: skip
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        with self.log_path.open("wb") as log:
            # a session of its own, so that stop() ends the server and anything it started, and nothing else
            try:
                self.proc = subprocess.Popen(
                    self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as e:
                raise RoundTripError(f"cannot run {self.args[0]}: {e}") from e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RoundTripError(
                    f"label-studio exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if json.loads(r.read()).get("status") == "UP":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(2)
        raise RoundTripError(
            f"label-studio did not answer {self.url}/health within {timeout:.0f} s "
            f"(raise --start-timeout on a slow machine; its first start migrates a new database):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(the server wrote nothing)"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of an authenticated request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of an API call that must succeed."""
        status, content, _ = self.request(method, path, body)
        if not 200 <= status < 300:
            text = content.decode(errors="replace")[:2000]
            raise RoundTripError(
                f"{method} {path} answered {status}: {text}\n--- server log ---\n{self.log_tail()}"
            )
        return json.loads(content) if content else None


def list_tasks(ls: LabelStudio, project: int) -> list[dict[str, Any]]:
    answer = ls.api("GET", f"/api/tasks?project={project}&page_size=1000")
    return list(answer["tasks"] if isinstance(answer, dict) else answer)


def round_trip(
    job: Path, label_pairs: Sequence[str], out: Path, command: str | None, start_timeout: float
) -> dict[str, Any]:
    root = (job / LS_DIR).resolve()
    config_path, tasks_path, images = root / "config.xml", root / "tasks.json", root / "images"
    for p in (config_path, tasks_path, images):
        if not p.exists():
            raise RoundTripError(f"{p} does not exist: {job} is not an imgselect job folder with {LS_DIR}/")
    config = config_path.read_text(encoding="utf-8")
    from_name, to_name, classes = read_choices(config)
    labels = parse_labels(label_pairs, classes)
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    tiles = {t["data"].get("tile") for t in tasks}
    if missing := sorted(set(labels) - tiles):
        raise RoundTripError(f"--label tiles {missing} have no task in {tasks_path} (tiles {sorted(tiles)})")

    with tempfile.TemporaryDirectory(prefix="ls-roundtrip-") as workdir:
        ls = LabelStudio(find_label_studio(command), root, Path(workdir), free_port())
        try:
            t0 = time.monotonic()
            ls.start(start_timeout)
            started_s = time.monotonic() - t0
            version = ls.api("GET", "/api/version").get("release", "?")
            project = ls.api(
                "POST", "/api/projects", {"title": "imgselect round trip", "label_config": config}
            )
            pid = int(project["id"])
            imported = ls.api("POST", f"/api/projects/{pid}/import", tasks)
            if imported.get("task_count") != len(tasks):
                raise RoundTripError(
                    f"imported {imported.get('task_count')} tasks of {len(tasks)}: {imported}"
                )
            served = list_tasks(ls, pid)

            # local-file serving: 404 until a storage of the project covers the images folder
            url = served[0]["data"]["image"]
            before, _, _ = ls.request("GET", url)
            ls.api(
                "POST",
                "/api/storages/localfiles",
                {"project": pid, "title": "job images", "path": str(images)},
            )
            status, content, content_type = ls.request("GET", url)
            name = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["d"][0]
            expected = (root / name).read_bytes()
            if status != 200 or content != expected:
                raise RoundTripError(
                    f"GET {url} answered {status} ({len(content)} bytes, {content_type}); expected the "
                    f"{len(expected)} bytes of {root / name}\n--- server log ---\n{ls.log_tail()}"
                )

            by_tile = {t["data"]["tile"]: t for t in served}
            for tile, cls in sorted(labels.items()):
                result = [
                    {
                        "from_name": from_name,
                        "to_name": to_name,
                        "type": "choices",
                        "value": {"choices": [cls]},
                    }
                ]
                ls.api("POST", f"/api/tasks/{by_tile[tile]['id']}/annotations/", {"result": result})

            query = "exportType=JSON&download_all_tasks=true&download_resources=false"
            status, raw, _ = ls.request("GET", f"/api/projects/{pid}/export?{query}")
            if status != 200:
                raise RoundTripError(f"export answered {status}: {raw[:2000]!r}\n{ls.log_tail()}")
            export = json.loads(raw)
        finally:
            ls.stop()

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(export, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {
        "label_studio": version,
        "started_s": round(started_s, 1),
        "tasks_imported": len(tasks),
        "with_predictions": sum(bool(t.get("predictions")) for t in tasks),
        "image_check": f"{url} -> {before} without a storage, {status} with one ({len(content)} bytes, {content_type})",
        "annotated": {str(k): v for k, v in sorted(labels.items())},
        "exported_tasks": len(export),
        "exported_with_annotations": sum(bool(t.get("annotations")) for t in export),
        "out": str(out),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "job", type=Path, help="imgselect job folder (with label_studio/config.xml, tasks.json)"
    )
    parser.add_argument("--label", nargs="+", default=[], metavar="TILE=CLASS", help="annotations to create")
    parser.add_argument("--out", type=Path, required=True, help="where to write Label Studio's JSON export")
    parser.add_argument("--label-studio", help="the label-studio command (default: beside this Python)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    try:
        summary = round_trip(args.job, args.label, args.out, args.label_studio, args.start_timeout)
    except RoundTripError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

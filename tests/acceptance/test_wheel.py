"""The `convergent` wheel is the toolkit alone, and its core imports with no extras installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is not installed: run `make test`, which installs it", pytrace=False)
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--wheel", "--package", "convergent", "-o", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("convergent-*.whl")
    return built


@pytest.fixture(scope="module")
def bare_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and no extras."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([_uv(), "venv", "-q", str(venv), "-p", sys.executable], check=True, env=env)
    subprocess.run(
        [_uv(), "pip", "install", "-q", "-p", str(venv / "bin" / "python"), str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    return venv / "bin" / "python"


def _run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/")


def test_the_wheel_holds_no_shop(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("convergent/workflows/") for n in names)
    assert not [n for n in names if "shop" in n.split("/")[0] or "/shop/" in n]


def test_the_core_imports_with_no_extras(bare_python: Path) -> None:
    done = _run(
        bare_python,
        "import convergent, convergent.workflows, convergent.outbox, convergent.auth; print(1)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import convergent.http", "fastapi"),
        ("import convergent.transports.nats", "nats"),
        ("import convergent.transports.kafka", "kafka"),
        ("from convergent.webhooks import Dispatcher", "http"),
        ("from convergent.idempotency import IdempotentClient", "http"),
        ("from convergent import Store; Store('sqlite+aiosqlite:///x.db')", "sqlite"),
        ("from convergent import Store; Store('postgresql://u@h/db')", "postgres"),
        ("import convergent.console", "console"),
    ],
)
def test_a_missing_extra_is_named(bare_python: Path, code: str, extra: str) -> None:
    done = _run(bare_python, code)
    assert done.returncode != 0
    assert f"pip install 'convergent[{extra}]'" in done.stderr.splitlines()[-1]


def test_the_command_without_its_extra_says_which(bare_python: Path) -> None:
    done = subprocess.run(
        [str(bare_python.parent / "convergent"), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the convergent command needs the 'cli' extra: pip install 'convergent[cli]'"
    )

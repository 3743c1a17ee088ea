"""`pip install ./clients/python` in a fresh virtualenv gives the package and the `taskflow` command."""

import shutil
import subprocess
import sys

import pytest

from tests.client.conftest import CLIENT_DIR

pytestmark = pytest.mark.pypi


def test_pip_install_in_a_fresh_venv_gives_the_taskflow_command(tmp_path):
    source = tmp_path / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)

    # The dependencies come from PyPI (through pip's cache when it has them): CI reaches PyPI.
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet", str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert install.returncode == 0, install.stderr[-3000:]
    version = subprocess.run([str(venv / "bin" / "taskflow"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "0.1.0" in version.stdout
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.resources as r, taskflow_client as t; "
         "print(t.TaskFlow.__name__, t.AsyncTaskFlow.__name__, r.files(t).joinpath('py.typed').is_file())"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.stdout.split() == ["TaskFlow", "AsyncTaskFlow", "True"], check.stderr
    unconfigured = subprocess.run([str(venv / "bin" / "taskflow"), "kinds"], capture_output=True, text=True,
                                  env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert unconfigured.returncode == 2 and "taskflow login" in unconfigured.stderr

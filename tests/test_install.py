"""The installed package carries the shipped weights and the console script."""
import os
import shutil
import subprocess

import pytest

from progcodec.weights import DEFAULT_MODEL, find_model_file, load_model


def test_shipped_model_loads_offline():
    m = load_model(DEFAULT_MODEL)
    assert m.name == DEFAULT_MODEL and len(m.digest) == 8
    assert find_model_file(DEFAULT_MODEL).stat().st_size > 1_000_000


@pytest.mark.skipif(not os.environ.get("CI") and shutil.which("progcodec") is None,
                    reason="progcodec is not installed in this environment")
def test_installed_console_script_finds_weights(tmp_path):
    """Run from an empty directory, so only the installed package can supply the weights."""
    exe = shutil.which("progcodec")
    assert exe, "CI installs the package: the progcodec command must be on PATH"
    r = subprocess.run([exe, "encode", "--help"], cwd=tmp_path, capture_output=True, timeout=120)
    assert r.returncode == 0
    code = ("from progcodec.weights import find_model_file, DEFAULT_MODEL;"
            "print(find_model_file(DEFAULT_MODEL))")
    r = subprocess.run([shutil.which("python") or "python", "-c", code], cwd=tmp_path,
                       capture_output=True, timeout=120, text=True)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout, r.stdout

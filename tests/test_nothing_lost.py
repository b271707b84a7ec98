"""Nothing lost: atomic outputs, inputs never overwritten, no partial file on failure or Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from PIL import Image

from progcodec import cli, container

from conftest import DATA, smooth_image

TINY = str(DATA / "tiny.safetensors")


def invoke(*args):
    r = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".part")]


@pytest.fixture
def files(tmp_path):
    png = tmp_path / "img.png"
    Image.fromarray(smooth_image(40, 56)).save(png)
    assert invoke("encode", png, "-o", tmp_path / "img.pic", "--model", TINY).exit_code == 0
    return png, tmp_path / "img.pic"


def test_output_resolving_to_an_input_is_refused(files, tmp_path):
    png, pic = files
    before = png.read_bytes(), pic.read_bytes()
    (tmp_path / "sym.png").symlink_to(png)
    os.link(pic, tmp_path / "hard.png")
    os.link(pic, tmp_path / "hard.pic")
    cases = [("encode", png, "-o", png), ("encode", png, "-o", tmp_path / "sym.png"),
             ("encode", tmp_path / "sym.png", "-o", png),
             ("decode", pic, "-o", tmp_path / "hard.png"),
             ("truncate", pic, "--bytes", 100, "-o", tmp_path / "hard.pic"),
             ("truncate", pic, "--bytes", 100, "-o", tmp_path / ".." / tmp_path.name / "img.pic")]
    for args in cases:
        r = invoke(*args, *(("--model", TINY) if args[0] != "truncate" else ()))
        assert r.exit_code == 1 and "refusing to overwrite the input" in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert (png.read_bytes(), pic.read_bytes()) == before
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_inside_write_leaves_no_partial_file(files, tmp_path, monkeypatch, exc):
    png, pic = files
    old = b"previous contents"
    (tmp_path / "out.png").write_bytes(old)

    def failing_fsync(fd):
        raise exc
    monkeypatch.setattr(cli.os, "fsync", failing_fsync)
    with pytest.raises(type(exc)):
        cli.write_atomic(str(tmp_path / "out.png"), b"new", ())
    with pytest.raises(type(exc)):
        cli.write_atomic(str(tmp_path / "new.png"), b"new", ())
    if isinstance(exc, OSError):  # through the CLI: one line, exit 1
        r = invoke("decode", pic, "-o", tmp_path / "out.png", "--model", TINY)
        assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
            f"progcodec: error: {pic}: No space left on device"]
    assert (tmp_path / "out.png").read_bytes() == old and not (tmp_path / "new.png").exists()
    assert no_temp_files(tmp_path)


def test_failure_mid_batch_goes_on_and_leaves_nothing_partial(tmp_path):
    for i in range(3):
        Image.fromarray(smooth_image(24, 32, seed=i)).save(tmp_path / f"im{i}.png")
    (tmp_path / "out" / "im1.pic").mkdir(parents=True)  # im1's output cannot be written
    r = invoke("encode", *sorted(tmp_path.glob("*.png")), "-o", tmp_path / "out", "--model", TINY,
               "--quiet")
    assert r.exit_code == 1
    assert "im1.png" in r.stderr and "1 of 3 inputs failed" in r.stderr
    for i in (0, 2):
        data = (tmp_path / "out" / f"im{i}.pic").read_bytes()
        assert len(data) == container.parse_header(data).full_length
    assert no_temp_files(tmp_path)


def test_ctrl_c_mid_batch_exits_130_and_leaves_no_partial_file(tmp_path):
    inputs = []
    for i in range(6):
        Image.fromarray(smooth_image(256, 320, seed=i)).save(tmp_path / f"p{i}.png")
        inputs.append(str(tmp_path / f"p{i}.png"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "progcodec", "encode", *inputs, "-o", str(out),
                             "--quiet"], stderr=subprocess.PIPE)  # shipped model: ~1 s a file
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.pic"))) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    written = sorted(out.glob("*.pic"))
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().splitlines() == ["progcodec: error: interrupted"]
    assert 1 <= len(written) < len(inputs)
    for p in written:  # every file there is complete
        data = p.read_bytes()
        assert len(data) == container.parse_header(data).full_length
    assert no_temp_files(tmp_path)

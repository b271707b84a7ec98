"""Odd input images: each encodes and decodes at its displayed size, or fails with one line.

The cases live in scripts/odd_images.py, which prints them as a table through the real CLI;
here they run in process (click's CliRunner) on the tiny model."""
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from progcodec import cli, codec

from conftest import DATA

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import odd_images  # noqa: E402

TINY = str(DATA / "tiny.safetensors")


def invoke(args):
    r = CliRunner().invoke(cli.main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.stderr


@pytest.mark.parametrize("case", odd_images.CASES, ids=[c[1] for c in odd_images.CASES])
def test_odd_image(case, tmp_path):
    name, fname, writer, expected = case
    row = odd_images.run_case(*case, tmp_path, invoke, TINY)
    if isinstance(expected, tuple):  # decoded at the size the image is displayed at
        assert row["encode_rc"] == 0 and row["decode_rc"] == 0, row
        assert row["decoded"] == row["shown"] == expected
        transparent = fname in ("la.png", "rgba.png", "pt.png")
        assert ("composited on white" in row["encode_err"]) == transparent, row["encode_err"]
        assert len(row["encode_err"].splitlines()) == (1 if transparent else 0)
    else:
        assert row["encode_rc"] == 1, row
        lines = row["encode_err"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("progcodec: error:") and expected in lines[0]
        assert not (tmp_path / (fname + ".pic")).exists()
    assert not list(tmp_path.glob(".*.part"))


def test_alpha_is_composited_on_white():
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200
    a[:, :2, 3] = 255  # left half opaque red-ish, right half fully transparent
    rgb = codec.to_rgb_array(Image.fromarray(a, "RGBA"))
    assert (rgb[:, :2] == [200, 0, 0]).all() and (rgb[:, 2:] == 255).all()


def test_16bit_rgb_keeps_the_high_byte(tmp_path):
    odd_images._png16_rgb(tmp_path / "x.png", 12, 20)
    rgb = codec.to_rgb_array(Image.open(tmp_path / "x.png"))
    assert np.abs(rgb.astype(int) - odd_images._pattern(12, 20)).max() <= 1


def test_exif_rotation_gives_the_displayed_image(tmp_path):
    odd_images._exif_rotated(tmp_path / "r.jpg")
    stored = Image.open(tmp_path / "r.jpg")
    assert stored.size == (64, 40)
    assert codec.to_rgb_array(stored).shape == (64, 40, 3)  # H x W as displayed



@pytest.mark.parametrize("w,h", [(65536, 16), (60000, 60000), (8193, 8192)])
def test_absurd_image_sizes_are_refused_from_the_header(tmp_path, w, h):
    """Over MAX_SIDE, over Pillow's own guard, just over MAX_PIXELS (Pillow silent): one line."""
    odd_images._png_header_only(tmp_path / "big.png", w, h)
    rc, err = invoke(["encode", str(tmp_path / "big.png"), "-o", str(tmp_path / "b.pic"), "--model", TINY])
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "exceeds the limit" in err, err

"""Decoding picks the model a file names: files written by an earlier default model still decode
after the default changes, and a forged name is never taken as a path."""
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import progcodec
from progcodec import codec, container, fuzz
from progcodec.weights import DEFAULT_MODEL, find_model_file

from conftest import DATA

OLD_MODEL = "progcodec-v9"  # an earlier default model, kept in models/ so that its files decode


def _small_photo():
    return Image.open(DATA / "kodim23_crop.png").convert("RGB").crop((0, 0, 96, 64))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "progcodec", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def old_file():
    find_model_file(OLD_MODEL)
    assert OLD_MODEL != DEFAULT_MODEL  # otherwise this file proves nothing
    return progcodec.encode(_small_photo(), model=OLD_MODEL)


def test_file_of_an_earlier_model_decodes_without_model_option(old_file, tmp_path):
    explicit = np.asarray(codec.decode(old_file, model=OLD_MODEL))
    assert np.array_equal(np.asarray(codec.decode(old_file)), explicit)
    assert codec.info(old_file)["elements_decodable"] > 0
    pic, png = tmp_path / "old.pic", tmp_path / "old.png"
    pic.write_bytes(old_file)
    r = _cli("decode", str(pic), "-o", str(png), "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), explicit)
    # an explicit model still wins, and a mismatch is the one-line refusal
    r = _cli("decode", str(pic), "-o", str(tmp_path / "x.png"), "-m", DEFAULT_MODEL)
    digest = container.parse_header(old_file).model_digest.hex()
    assert r.returncode == 1 and f"was encoded with the model with digest {digest}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_version_3_header_decodes_as_version_4(old_file, tmp_path):
    """A file written before version 4 (the model named in the header) and the same streams
    under the version 4 header (the digest alone) decode to the same pixels without --model."""
    assert old_file[4] == container.VERSION_COMPACT and container.parse_header(old_file).size == 33
    v3 = fuzz.legacy_header(old_file, OLD_MODEL)
    assert v3[4] == container.VERSION_REFINED and len(v3) == len(old_file) + 8 + len(OLD_MODEL)  # 41 + L
    assert np.array_equal(np.asarray(codec.decode(v3)), np.asarray(codec.decode(old_file)))
    assert codec.info(v3)["model"] == codec.info(old_file)["model"] == OLD_MODEL


def test_unknown_digest_is_refused_in_one_line(old_file, tmp_path):
    d = bytearray(old_file)
    d[5:13] = bytes(8)  # no shipped weight file has this digest
    struct.pack_into(">I", d, 29, zlib.crc32(bytes(d[:29])))
    pic = tmp_path / "unknown.pic"
    pic.write_bytes(bytes(d))
    r = _cli("decode", str(pic), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 1 and not (tmp_path / "x.png").exists()
    assert "not shipped" in r.stderr and "0000000000000000" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert codec.info(bytes(d))["model"] is None


@pytest.mark.parametrize("name", ["../models/progcodec-v9", "/etc/passwd", "x.safetensors",
                                  "no-such-model"])
def test_forged_model_name_is_refused_in_one_line(old_file, tmp_path, name):
    forged = fuzz.legacy_header(old_file, name)  # versions 1 to 3 name the model
    pic = tmp_path / "forged.pic"
    pic.write_bytes(forged)
    out = tmp_path / "forged.png"
    r = _cli("decode", str(pic), "-o", str(out))
    assert r.returncode == 1 and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert name in r.stderr


def test_saving_the_same_model_gives_the_same_bytes(tmp_path):
    """The weight file's digest goes into every .pic, so one model must always save to the same
    bytes (the safetensors library orders the metadata keys at random)."""
    from make_tiny_model import tiny_trained_model
    from progcodec.export import runtime_model_from_trained
    from progcodec.weights import load_model, save_weights
    model = runtime_model_from_trained(tiny_trained_model())
    digests = {save_weights(model, "tiny-same", tmp_path / f"w{i}.safetensors") for i in range(8)}
    assert len(digests) == 1
    loaded = load_model(tmp_path / "w0.safetensors")
    assert loaded.name == "tiny-same" and loaded.digest in digests

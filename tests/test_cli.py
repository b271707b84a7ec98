"""The command line as a user drives it: exit codes, one-line errors, atomic outputs."""
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progcodec import codec, container

from conftest import DATA, smooth_image

TINY = str(DATA / "tiny.safetensors")


def run(*args, stdin: bytes | None = None, cwd=None):
    """Run `python -m progcodec ...` as a user would (a real process, the real entry point)."""
    return subprocess.run([sys.executable, "-m", "progcodec", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=120)


def assert_clean_error(r, *words):
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("progcodec: error:"), err
    for w in words:
        assert w in err, err


@pytest.fixture
def pic(tmp_path):
    png = tmp_path / "img.png"
    Image.fromarray(smooth_image(48, 80)).save(png)
    r = run("encode", png, "-o", tmp_path / "img.pic", "--model", TINY)
    assert r.returncode == 0, r.stderr.decode()
    return tmp_path / "img.pic"


def test_encode_decode_info_truncate(tmp_path, pic):
    data = pic.read_bytes()
    h = container.parse_header(data)
    r = run("decode", pic, "-o", tmp_path / "out.png", "--model", TINY, "--json")
    assert r.returncode == 0, r.stderr.decode()
    rec = json.loads(r.stdout)
    assert rec["bytes_used"] == len(data) and rec["elements_decoded"] == rec["elements_total"]
    assert Image.open(tmp_path / "out.png").size == (80, 48)

    r = run("truncate", pic, "-o", tmp_path / "cut.pic", "--bytes", h.min_length + 10)
    assert r.returncode == 0 and (tmp_path / "cut.pic").read_bytes() == data[:h.min_length + 10]
    r = run("info", tmp_path / "cut.pic", "--json", "--model", TINY)
    rec = json.loads(r.stdout)
    assert rec["width"] == 80 and rec["height"] == 48 and rec["file_bytes"] == h.min_length + 10
    assert 0 < rec["elements_decodable"] < rec["elements_total"]


def test_stdin_stdout_pipeline(tmp_path):
    buf = tmp_path / "a.png"
    Image.fromarray(smooth_image(30, 40)).save(buf)
    enc = run("encode", "-", "-o", "-", "--model", TINY, stdin=buf.read_bytes())
    assert enc.returncode == 0 and enc.stdout[:4] == container.MAGIC
    dec = run("decode", "-", "-o", "-", "--model", TINY, "--quality", "0.5", stdin=enc.stdout)
    assert dec.returncode == 0 and dec.stdout[:8] == b"\x89PNG\r\n\x1a\n"


def test_head_c_cut_decodes(tmp_path, pic):
    data = pic.read_bytes()
    h = container.parse_header(data)
    for n in (h.min_length, h.min_length + 1, (h.min_length + len(data)) // 2, len(data) - 1):
        cut = tmp_path / f"cut{n}.pic"
        cut.write_bytes(data[:n])
        r = run("decode", cut, "-o", tmp_path / f"cut{n}.png", "--model", TINY, "--quiet")
        assert r.returncode == 0, r.stderr.decode()
        assert Image.open(tmp_path / f"cut{n}.png").size == (80, 48)


def test_too_short_names_minimum(tmp_path, pic):
    data = pic.read_bytes()
    h = container.parse_header(data)
    short = tmp_path / "short.pic"
    short.write_bytes(data[:h.min_length - 1])
    r = run("decode", short, "-o", tmp_path / "x.png", "--model", TINY)
    assert_clean_error(r, f"at least {h.min_length} bytes")
    assert not (tmp_path / "x.png").exists()


def test_corrupt_header_and_z(tmp_path, pic):
    data = bytearray(pic.read_bytes())
    bad = tmp_path / "bad.pic"
    data[10] ^= 0x40  # inside the model name: header checksum fails
    bad.write_bytes(bytes(data))
    assert_clean_error(run("decode", bad, "-o", tmp_path / "x.png", "--model", TINY), "checksum")
    data[10] ^= 0x40
    h = container.parse_header(bytes(data))
    data[h.size + 1] ^= 0x01  # inside the z stream
    bad.write_bytes(bytes(data))
    assert_clean_error(run("decode", bad, "-o", tmp_path / "x.png", "--model", TINY), "z stream")
    assert not (tmp_path / "x.png").exists()


def test_corrupt_y_block_decodes_intact_prefix_or_fails_strict(tmp_path):
    # 256-byte y blocks: a small file with several (the writer's default is 4096)
    data = bytearray(codec.encode(smooth_image(256, 320), model=TINY, device="cpu", y_block=256))
    h = container.parse_header(bytes(data))
    assert h.y_len > h.y_block, "need at least two y blocks"
    data[h.min_length + h.y_block + 4 + 3] ^= 0xFF  # inside the second block
    (tmp_path / "bad.pic").write_bytes(bytes(data))
    r = run("decode", tmp_path / "bad.pic", "-o", tmp_path / "x.png", "--model", TINY, "--json")
    assert r.returncode == 0 and "checksum" in r.stderr.decode()
    rec = json.loads(r.stdout)
    assert 0 < rec["elements_decoded"] < rec["elements_total"]
    r = run("decode", tmp_path / "bad.pic", "-o", tmp_path / "y.png", "--model", TINY, "--strict")
    assert_clean_error(r, "checksum")
    assert not (tmp_path / "y.png").exists()


def test_huge_header_claim_is_refused(tmp_path, pic):
    data = pic.read_bytes()
    h = container.parse_header(data)
    h.width = h.height = 1_000_000 % 65536 or 1
    body = bytearray(h.pack()[:-4])
    struct.pack_into(">II", body, 7 + len(h.model_name) + 8, 10**6, 10**6)
    forged = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))) + data[h.size:]
    (tmp_path / "huge.pic").write_bytes(forged)
    assert_clean_error(run("decode", tmp_path / "huge.pic", "-o", tmp_path / "x.png",
                           "--model", TINY), "image size")


def test_bad_inputs(tmp_path):
    (tmp_path / "text.png").write_text("hello, not an image")
    assert_clean_error(run("encode", tmp_path / "text.png", "-o", tmp_path / "t.pic", "--model", TINY),
                       "not a readable image")
    (tmp_path / "empty.png").write_bytes(b"")
    assert_clean_error(run("encode", tmp_path / "empty.png", "-o", tmp_path / "e.pic", "--model", TINY),
                       "empty")
    assert_clean_error(run("encode", tmp_path / "missing.png", "-o", tmp_path / "m.pic", "--model", TINY),
                       "No such file")
    assert_clean_error(run("decode", tmp_path / "text.png", "-o", tmp_path / "x.png", "--model", TINY),
                       "not a .pic file")
    assert not any(p.suffix in (".pic", ".part") for p in tmp_path.iterdir())


def test_batch_goes_on_past_bad_file(tmp_path):
    for i in range(3):
        Image.fromarray(smooth_image(20 + i, 30, seed=i)).save(tmp_path / f"ok{i}.png")
    (tmp_path / "bad.png").write_text("nope")
    inputs = sorted(tmp_path.glob("*.png"))
    r = run("encode", *inputs, "-o", tmp_path / "out", "--model", TINY, "--json")
    assert r.returncode == 1
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(recs) == 3 and all(rec["bytes"] > 0 for rec in recs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok0.pic", "ok1.pic", "ok2.pic"]
    assert "bad.png" in r.stderr.decode()


def test_usage_errors_exit_2(tmp_path, pic):
    assert run("decode", pic, "--quality", "1.5", "--model", TINY).returncode == 2
    assert run("decode", pic, "--quality", "0.5", "--bytes", "100", "--model", TINY).returncode == 2
    assert run("encode", "a.png", "b.png").returncode == 2
    assert run("frobnicate").returncode == 2


def test_wrong_model_is_refused(tmp_path, pic):
    r = run("decode", pic, "-o", tmp_path / "x.png")  # default shipped model, file made with tiny
    assert_clean_error(r, "tiny-test")


def test_help_explains_every_option():
    for cmd in ("encode", "decode", "truncate", "info"):
        out = run(cmd, "--help").stdout.decode()
        for opt in ("--quality", "--bytes", "--bpp") if cmd != "info" else ("--json",):
            assert opt in out


def test_decode_default_output_never_replaces_the_original(tmp_path):
    png = tmp_path / "photo.png"
    Image.fromarray(smooth_image(20, 30)).save(png)
    original = png.read_bytes()
    assert run("encode", png, "--model", TINY, "--quiet").returncode == 0
    assert run("decode", tmp_path / "photo.pic", "--model", TINY, "--quiet").returncode == 0
    assert png.read_bytes() == original
    assert (tmp_path / "photo.decoded.png").exists()


def test_huge_png_header_refused_before_decoding(tmp_path):
    """A 200-byte PNG claiming 60000x60000: refused from its header, nothing allocated."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(png)
    assert_clean_error(run("encode", tmp_path / "bomb.png", "-o", tmp_path / "b.pic", "--model", TINY),
                       "exceeds the limit")


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    im = Image.open(tmp_path / "deep.png")
    from progcodec.codec import to_rgb_array
    rgb = to_rgb_array(im)
    assert rgb.shape == (48, 64, 3)
    assert abs(int(rgb[..., 0].mean()) - int(ramp.mean() / 257)) <= 1  # not all 255


def test_bad_option_values_are_usage_errors(tmp_path, pic):
    for opt in (["--bpp", "nan"], ["--bpp", "inf"], ["--quality", "nan"]):
        assert run("decode", pic, "-o", tmp_path / "x.png", "--model", TINY, *opt).returncode == 2, opt
    r = run("decode", pic, "-o", tmp_path / "x.psd", "--model", TINY)
    assert r.returncode == 2 and not (tmp_path / "x.psd").exists()
    (tmp_path / "afile").write_text("x")
    assert run("encode", pic, pic, "-o", tmp_path / "afile", "--model", TINY).returncode == 2


def test_forged_empty_z_stream_is_rejected(tmp_path, pic):
    """A header whose z stream is empty but CRC-valid: z must re-encode to itself."""
    h = container.parse_header(pic.read_bytes())
    h.z_len, h.y_len = 0, 0
    forged = h.pack() + struct.pack(">I", zlib.crc32(b""))
    (tmp_path / "forged.pic").write_bytes(forged)
    assert_clean_error(run("decode", tmp_path / "forged.pic", "-o", tmp_path / "x.png", "--model", TINY),
                       "z stream")


def test_output_files_follow_umask(tmp_path, pic):
    import os
    assert run("decode", pic, "-o", tmp_path / "m.png", "--model", TINY, "--quiet").returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_search_z_flag_reaches_the_encoder(tmp_path):
    """`--search N` moves z by default; `--no-search-z` keeps the plain encoder's z."""
    png = DATA / "kodim23_crop.png"
    z_parts = {}
    for name, extra in (("plain", []), ("y", ["--search", 3, "--no-search-z"]),
                        ("yz", ["--search", 3])):
        out = tmp_path / f"{name}.pic"
        r = run("encode", png, "-o", out, *extra)
        assert r.returncode == 0, r.stderr.decode()
        data = out.read_bytes()
        h = container.parse_header(data)
        z_parts[name] = data[h.size:h.size + h.z_len]
    assert z_parts["y"] == z_parts["plain"] != z_parts["yz"]

"""progcodec eval / ladder: metrics, BD-rate, the JPEG 2000 cutter, and the commands end to end."""
import json
import math
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from progcodec import bdrate, classic, cli, evaluate, ladder, metrics

from conftest import DATA, smooth_image

TINY = str(DATA / "tiny.safetensors")
HAVE_OPJ = shutil.which("opj_compress") is not None and shutil.which("opj_decompress") is not None


# ---- PSNR -------------------------------------------------------------------------------------
def test_psnr_hand_computed():
    a = smooth_image(32, 48)
    b = a.astype(np.int16)
    b = np.where(b < 255, b + 1, b - 1).astype(np.uint8)  # every value off by exactly 1: MSE 1
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert metrics.psnr(a, b) == pytest.approx(48.1308, abs=1e-4)
    c = a.astype(np.int16)
    c[..., 0] = np.where(c[..., 0] < 250, c[..., 0] + 4, c[..., 0] - 4)  # one channel off by 4: MSE 16/3
    assert metrics.psnr(a, c.astype(np.uint8)) == pytest.approx(10 * math.log10(255**2 * 3 / 16), abs=1e-9)
    assert metrics.psnr(a, a) == float("inf")


# ---- MS-SSIM ----------------------------------------------------------------------------------
def _direct_ms_ssim(a, b):
    """MS-SSIM written the straightforward way: float64, a full 11x11 window per pixel."""
    from numpy.lib.stride_tricks import sliding_window_view
    k = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k /= k.sum()
    win = np.outer(k, k)
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    result = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        vals = []
        for s in range(5):
            def blur(img):
                return np.einsum("ijkl,kl->ij", sliding_window_view(img, (11, 11)), win)
            mx, my = blur(x), blur(y)
            vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
            cs = (2 * cxy + c2) / (vx + vy + c2)
            if s < 4:
                vals.append(max(cs.mean(), 0))
                x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
                y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
            else:
                vals.append(max(((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean(), 0))
        result.append(np.prod(np.array(vals) ** np.array(weights)))
    return float(np.mean(result))


def test_ms_ssim_identical_is_one():
    a = smooth_image(192, 208)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_constant_images_hand_computed():
    # no variance anywhere: every contrast-structure term is 1; only the coarsest scale's
    # luminance term (2ab + C1) / (a^2 + b^2 + C1) remains, raised to the last weight
    a = np.full((192, 192, 3), 128, np.uint8)
    b = np.full((192, 192, 3), 102, np.uint8)
    x, y, c1 = 128 / 255, 102 / 255, 0.01**2
    expected = ((2 * x * y + c1) / (x * x + y * y + c1)) ** 0.1333
    assert metrics.ms_ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_ms_ssim_matches_direct_implementation():
    a = smooth_image(192, 192, seed=1)
    rng = np.random.default_rng(5)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    got, want = metrics.ms_ssim(a, b), _direct_ms_ssim(a, b)
    assert 0.5 < want < 0.999
    assert got == pytest.approx(want, abs=2e-5)
    orig = metrics.Original(a)  # the cached-reference path gives the same value
    assert orig.score(b)[1] == pytest.approx(got, abs=1e-9)


# ---- BD-rate ----------------------------------------------------------------------------------
RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNRS = np.array([26.0, 28.6, 31.0, 33.2, 35.9])


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_rate_scaled_rates_is_minus_20_percent(method):
    assert bdrate.bd_rate((RATES, PSNRS), (RATES * 0.8, PSNRS), method) == pytest.approx(-20, abs=1e-9)
    assert bdrate.bd_rate((RATES * 0.8, PSNRS), (RATES, PSNRS), method) == pytest.approx(25, abs=1e-9)
    assert bdrate.bd_rate((RATES, PSNRS), (RATES, PSNRS), method) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_shifted_psnr_on_a_log_linear_curve(method):
    # PSNR = 30 + 4 ln(rate): +1 dB everywhere means ln(rate) - 1/4 for the same PSNR
    q = 30 + 4 * np.log(RATES)
    assert bdrate.bd_rate((RATES, q), (RATES, q + 1), method) == pytest.approx(
        (math.exp(-0.25) - 1) * 100, abs=1e-9)
    assert bdrate.bd_quality((RATES, q), (RATES, q + 1), method) == pytest.approx(1.0, abs=1e-9)


def test_bd_rate_of_cubic_curves_hand_computed():
    # log-rate exactly cubic in PSNR for both curves (sampled at different PSNRs), so the cubic
    # fit is exact: the test curve adds 0.01 (q - 30)^2, whose mean over the overlap [27, 33]
    # is 0.01 * 18 / 6
    def log_ref(q):
        return -2.3 + 0.3 * (q - 26) + 0.002 * (q - 26) ** 3
    q1 = np.array([25.0, 27.5, 30.0, 31.0, 33.0])
    q2 = np.array([27.0, 28.0, 29.5, 32.0, 34.0])
    ref = (np.exp(log_ref(q1)), q1)
    test = (np.exp(log_ref(q2) + 0.01 * (q2 - 30) ** 2), q2)
    want = (math.exp(0.01 * 18 / 6) - 1) * 100
    assert bdrate.bd_rate(ref, test, "cubic") == pytest.approx(want, abs=1e-9)
    assert bdrate.bd_rate(ref, test, "pchip") == pytest.approx(want, abs=0.3)


def test_pchip_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    x = np.array([24.0, 26.5, 27.0, 30.0, 34.0, 35.0])
    y = np.array([-3.0, -2.2, -2.15, -1.0, 0.2, 0.9])
    t = np.linspace(24, 35, 777)
    ref = interpolate.PchipInterpolator(x, y)
    assert np.allclose(bdrate.pchip_eval(x, y, t), ref(t), atol=1e-12)
    assert bdrate.pchip_integral(x, y, 25.1, 33.3) == pytest.approx(ref.integrate(25.1, 33.3), abs=1e-12)


def test_bd_pchip_matches_an_independent_integral():
    # a non-uniform curve: PCHIP integral against fine trapezoid sampling of the interpolant
    x, y = PSNRS, np.log(RATES)
    exact = bdrate.pchip_integral(x, y, 27.0, 35.0)
    t = np.linspace(27.0, 35.0, 200001)
    v = bdrate.pchip_eval(x, y, t)
    assert exact == pytest.approx(float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(t))), abs=1e-8)
    # the interpolant passes through the points and is monotone between them (Fritsch–Carlson)
    assert np.allclose(bdrate.pchip_eval(x, y, x), y)
    assert np.all(np.diff(bdrate.pchip_eval(x, y, np.linspace(x[0], x[-1], 1001))) > 0)


def test_bd_non_overlapping_curves_raise():
    with pytest.raises(bdrate.BDError, match="do not overlap"):
        bdrate.bd_rate((RATES, PSNRS), (RATES, PSNRS + 20))
    with pytest.raises(bdrate.BDError, match="needs 4"):
        bdrate.bd_rate((RATES[:3], PSNRS[:3]), (RATES[:3], PSNRS[:3]), "cubic")


# ---- JPEG 2000 codestream cutter ------------------------------------------------------------
def test_plt_lengths_roundtrip():
    lengths = [0, 1, 127, 128, 16383, 16384, 2**21 + 5] + list(range(0, 40000, 7))
    seg = classic._write_plt(lengths)
    out, pos = [], 0
    while pos < len(seg):
        marker, length = struct.unpack(">HH", seg[pos:pos + 4])
        assert marker == classic.PLT and length <= 65535
        out += classic._read_plt(seg[pos + 4:pos + 2 + length])
        pos += 2 + length
    assert out == lengths


@pytest.mark.skipif(not HAVE_OPJ, reason="OpenJPEG tools (opj_compress) not installed")
def test_j2k_cutter_on_a_real_stream(tmp_path):
    rgb = np.asarray(Image.open(DATA / "kodim23_crop.png").convert("RGB"))
    data = classic.j2k_encode(rgb, tmp_path)
    cs = classic.parse_codestream(data)
    assert sum(cs.packets) == len(cs.body) and len(cs.packets) > 10
    previous = -1.0
    for budget in (400, 800, 1500, 3000, len(data) - 1):
        cut, k = classic.cut_codestream(data, budget)
        assert len(cut) <= budget and 0 < k < len(cs.packets)
        assert cut[:2] == b"\xff\x4f" and cut[-2:] == b"\xff\xd9"
        again = classic.parse_codestream(cut)  # a valid stream: Psot and PLT agree with the data
        assert again.packets == cs.packets[:k]
        p = metrics.psnr(rgb, classic.j2k_decode(cut, tmp_path))
        assert p >= previous - 1e-9
        previous = p
    assert previous > 25
    with pytest.raises(classic.J2KError):
        classic.cut_codestream(data, 20)


# ---- eval end to end --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    Image.open(DATA / "kodim23_crop.png").save(d / "a.png")
    return d


def _anchor(path, name, scale):
    bpp = [0.1, 0.25, 0.5, 1.0, 2.0]
    path.write_text(json.dumps({"name": name, "description": "test curve", "results": {
        "bpp": bpp, "psnr-rgb": [22 + scale * math.log2(b * 10) for b in bpp],
        "ms-ssim-rgb": [0.8, 0.9, 0.95, 0.98, 0.99]}}))


@pytest.fixture(scope="module")
def evaluated(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    anchors = tmp_path_factory.mktemp("anchors")
    _anchor(anchors / "fake.json", "FakeCodec", 3.0)
    r = CliRunner().invoke(cli.main, ["eval", str(dataset), "-o", str(out), "--model", TINY,
                                      "--against", "jpeg,webp,jpeg2000", "--anchors", str(anchors),
                                      "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_eval_writes_compressai_schema(evaluated):
    d = json.loads((evaluated / "results.json").read_text())
    assert {"name", "description", "results"} <= set(d)
    res = d["results"]
    assert set(res) == {"bpp", "psnr-rgb", "ms-ssim", "encoding_time", "decoding_time"}
    n = len(res["bpp"])
    assert n >= 2 and all(len(v) == n for v in res.values())
    assert res["bpp"] == sorted(res["bpp"])
    img = d["per_image"][0]
    assert img["file"] == "a.png" and img["points"][-1]["setting"] == "whole file"
    assert img["points"][-1]["bytes"] == img["bytes"]
    for p in img["points"][:-1]:  # every cut at least the minimum, shorter than the file
        assert img["min_bytes"] <= p["bytes"] < img["bytes"]
        assert p["bpp"] == pytest.approx(8 * p["bytes"] / (160 * 96))
    assert res["bpp"][-1] == pytest.approx(img["points"][-1]["bpp"])
    for name in ("jpeg", "webp"):
        c = json.loads((evaluated / f"{name}.json").read_text())
        assert len(c["results"]["bpp"]) == len(classic.JPEG_QUALITIES if name == "jpeg"
                                               else classic.WEBP_QUALITIES)
    assert d["run"]["images"] == 1 and d["run"]["model"] == "tiny-test"


def test_eval_markdown_and_bd_table(evaluated):
    md = (evaluated / "results.md").read_text()
    assert "progcodec eval" in md and "--against jpeg,webp,jpeg2000" in md
    assert "BD-rate PCHIP" in md and "FakeCodec" in md and "median" in md.lower()
    d = json.loads((evaluated / "results.json").read_text())
    rows = {r["key"]: r for r in d["run"]["bd_rate"]["rows"]}
    assert "jpeg" in rows and "fake" in rows
    if HAVE_OPJ:
        assert (evaluated / "jpeg2000.json").exists()
        assert d["run"]["bd_rate"]["reference"].startswith("JPEG 2000")
    else:
        assert "jpeg2000 skipped" in md
    try:
        import matplotlib  # noqa: F401
        png = Image.open(evaluated / "rd.png")
        assert png.size[0] > png.size[1]
    except ImportError:
        assert "pip install 'progcodec[eval]'" in md


def test_eval_without_tools_or_matplotlib(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(classic.shutil, "which", lambda name: None)

    def no_matplotlib(res):
        raise ImportError("no matplotlib")
    monkeypatch.setattr(evaluate, "plot_png", no_matplotlib)
    r = CliRunner().invoke(cli.main, ["eval", str(dataset), "-o", str(tmp_path), "--model", TINY,
                                      "--against", "jpeg2000"])
    assert r.exit_code == 0, r.output
    assert "jpeg2000 skipped" in r.output and "opj_compress" in r.output
    assert "progcodec[eval]" in r.output
    assert not (tmp_path / "rd.png").exists() and not (tmp_path / "jpeg2000.json").exists()
    assert "jpeg2000 skipped" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["run"]["notes"]


def test_eval_reference_and_usage_errors(dataset, tmp_path):
    ref = tmp_path / "ref.json"
    _anchor(ref, "MyReference", 2.5)
    out = tmp_path / "o"
    r = CliRunner().invoke(cli.main, ["eval", str(dataset), "-o", str(out), "--model", TINY,
                                      "--reference", str(ref), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["run"]["bd_rate"]["reference"] == "MyReference"
    r = CliRunner().invoke(cli.main, ["eval", str(dataset), "-o", str(out), "--against", "png"])
    assert r.exit_code == 2 and "unknown codec" in r.output
    r = CliRunner().invoke(cli.main, ["eval", str(dataset), "-o", str(out), "--model", TINY,
                                      "--reference", "nosuch", "--quiet"])
    assert r.exit_code == 1 and "no such curve" in r.output


def test_eval_progress_and_summary_on_stderr_only(dataset, tmp_path):
    args = ["eval", str(dataset), "-o", str(tmp_path), "--model", TINY]
    r = CliRunner().invoke(cli.main, args)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert r.stderr.startswith("eval") and "## BD-rate" in r.stderr
    r = CliRunner().invoke(cli.main, args + ["--quiet"])
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


# ---- ladder -----------------------------------------------------------------------------------
def test_ladder_png_width(tmp_path):
    rgb = smooth_image(48, 80)
    src = tmp_path / "img.png"
    Image.fromarray(rgb).save(src)
    r = CliRunner().invoke(cli.main, ["encode", str(src), "-o", str(tmp_path / "i.pic"), "--model", TINY])
    assert r.exit_code == 0, r.output
    size = (tmp_path / "i.pic").stat().st_size
    out = tmp_path / "ladder.png"
    r = CliRunner().invoke(cli.main, ["ladder", str(tmp_path / "i.pic"), "-o", str(out), "--model",
                                      TINY, "--cuts", f"{size // 2},1.5bpp,full", "--original", str(src)])
    assert r.exit_code == 0, r.output
    im = Image.open(out)
    assert im.size == (3 * 80 + 2 * ladder.GAP, 48 + ladder.LABEL_H)
    # the last tile is the whole file: same pixels as a plain decode
    full = np.asarray(im)[:48, -80:]
    import progcodec
    from progcodec.weights import load_model
    assert np.array_equal(full, np.asarray(progcodec.decode((tmp_path / "i.pic").read_bytes(),
                                                           model=load_model(TINY))))
    r = CliRunner().invoke(cli.main, ["ladder", str(tmp_path / "i.pic"), "-o", str(out), "--model", TINY])
    assert r.exit_code == 0, r.output
    n = len(ladder.default_cuts(len(progcodec.truncate((tmp_path / "i.pic").read_bytes(), quality=0)), size))
    assert n >= 3 and Image.open(out).size[0] == n * 80 + (n - 1) * ladder.GAP
    r = CliRunner().invoke(cli.main, ["ladder", str(tmp_path / "i.pic"), "-o", str(out), "--model",
                                      TINY, "--cuts", "abc"])
    assert r.exit_code == 2


def test_eval_and_ladder_help_explains_every_option():
    import click
    for name in ("eval", "ladder"):
        cmd = cli.main.commands[name]
        assert cmd.help and len(cmd.help) > 40
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help and len(p.help) > 10, (name, p.name)
        out = CliRunner().invoke(cli.main, [name, "--help"]).output
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.opts[-1] in out

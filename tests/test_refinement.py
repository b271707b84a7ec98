"""The refinement pass of format versions 3 to 5 (docs/format.md 5.1): one bit per element, for
the first elements in coding order, after every base symbol; in version 5 coded with the
model's refinement table."""
import json

import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container, entropy
from progcodec.codec import psnr
from PIL import Image

from conftest import (decode_latent as _latent, smooth_image, with_random_order_table,
                      with_random_refine_table)
from test_cli import TINY, assert_clean_error, run


@pytest.fixture(scope="module")
def ordered(tiny):
    return with_random_order_table(tiny, seed=5)


@pytest.fixture(scope="module")
def tabled(ordered):
    return with_random_refine_table(ordered, seed=7)


@torch.no_grad()
def _encoder_view(img, model):
    """What the encoder sees (codec.encoder_symbols): clamped symbols and residuals y - mu in
    coding order, mu, and the order."""
    rt = codec.runtime(model, "cpu")
    y = codec._analysis(rt, img)
    z, levels, symbols, residual = codec.encoder_symbols(rt, y)
    mu, idx = rt.hyper(torch.from_numpy(z)[None])
    order = codec.coding_order(idx, rt.levels, rt.order_rank)
    return entropy.clamp_y_symbols(symbols, levels, rt.models), residual, mu, order


def test_version_and_count_follow_refine(ordered):
    img = smooth_image(96, 128)
    n = 16 * 2 * 2 * ordered.model.config.M  # hz = wz = 2 for 96x128
    for refine in (0.0, 0.3, 1.0):
        h = container.parse_header(progcodec.encode(img, model=ordered, refine=refine))
        assert (h.version, h.refined) == (container.VERSION_COMPACT, codec.refine_count(n, refine))
    assert container.parse_header(progcodec.encode(img, model=ordered)).refined == \
        codec.refine_count(n, codec.DEFAULT_REFINE)


def test_refined_elements_land_in_the_right_half(ordered):
    """Complete file: every refined element is its base value -/+ 1/4, on the side of the
    encoder's residual, so it is at most 1/4 from it; the others keep the base value."""
    img = smooth_image(96, 128, seed=2)
    base = _latent(progcodec.encode(img, model=ordered, refine=0), ordered)
    full = _latent(progcodec.encode(img, model=ordered, refine=0.5), ordered)
    symbols, residual, mu, order = _encoder_view(img, ordered)
    k = codec.refine_count(len(order), 0.5)
    assert full.refined == k and base.refined == 0 and full.decoded == base.decoded == len(order)
    step = (full.y_hat.double() - base.y_hat.double()).flatten()[order]
    assert torch.equal(step[k:], torch.zeros_like(step[k:]))
    # y_hat is float32: mu + s -/+ 1/4 and mu + s each round once
    assert torch.allclose(step[:k].abs(), torch.full_like(step[:k], 0.25), atol=1e-5)
    got = full.y_hat.double().flatten()[order][:k] - mu.double()[order][:k]
    want_side = torch.from_numpy(residual[:k] - symbols[:k] >= 0)
    assert torch.equal(got > torch.from_numpy(symbols[:k]).double(), want_side)
    unclamped = torch.from_numpy(np.abs(residual[:k] - symbols[:k]) <= 0.5)
    err = (got - torch.from_numpy(residual[:k])).abs()
    assert float(err[unclamped].max()) <= 0.25 + 1e-5


@pytest.mark.parametrize("table", [False, True], ids=["one bit each", "refinement table"])
def test_every_cut_into_the_refinement_decodes_a_prefix_of_it(ordered, tabled, table):
    """Cuts from the end of the base symbols to the end of the file: each decodes every base
    element, a number of refinement bits that never falls, and those bits equal the full
    file's."""
    ordered = tabled if table else ordered  # the order is the same
    img = smooth_image(192, 256, seed=4)
    data = progcodec.encode(img, model=ordered, refine=1.0)
    h = container.parse_header(data)
    full = _latent(data, ordered)
    assert full.refined == h.refined > 0
    rng = np.random.default_rng(1)
    cuts = sorted(set(rng.integers(h.min_length, len(data) + 1, 60).tolist()) | {len(data) - 1})
    order = _encoder_view(img, ordered)[3]
    prev_total, partial = -1, 0
    for n in cuts:
        lat = _latent(data[:n], ordered)
        partial += 0 < lat.refined < h.refined
        total = lat.decoded + lat.refined
        assert total >= prev_total, n
        prev_total = total
        assert lat.refined == 0 or lat.decoded == lat.total, "refinement only after every base symbol"
        if lat.refined:
            flat, ref = lat.y_hat.flatten(), full.y_hat.flatten()
            assert torch.equal(flat[order[:lat.refined]], ref[order[:lat.refined]]), n
    assert partial >= 10, "too few cuts fell inside the refinement bits"
    assert _latent(data[:-5], ordered).refined < h.refined


def test_refinement_table_changes_the_bytes_not_the_latent(ordered, tabled):
    """Version 5 codes the same symbols and bits as version 4 with other probabilities: every
    cut of the base symbols and the complete file decode to the same latent; a version 4 file
    and a model with a refinement table (and the reverse) do not go together."""
    img = smooth_image(128, 192, seed=6)
    v4, v5 = (progcodec.encode(img, model=m, refine=0.6) for m in (ordered, tabled))
    assert (v4[4], v5[4]) == (4, 5) and v4 != v5
    assert torch.equal(_latent(v4, ordered).y_hat, _latent(v5, tabled).y_hat)
    h4, h5 = container.parse_header(v4), container.parse_header(v5)
    assert h4.refined == h5.refined > 0
    base_end = h4.min_length + (len(v4) - h4.min_length) // 3  # well inside the base symbols
    a, b = _latent(v4[:base_end], ordered), _latent(v5[:base_end], tabled)
    assert a.refined == b.refined == 0 and a.decoded == b.decoded < a.total
    assert torch.equal(a.y_hat, b.y_hat)
    for data, wrong in ((v4, tabled), (v5, ordered)):
        h = container.parse_header(data)
        forged = container.Header(None, wrong.digest, h.width, h.height, h.z_len, h.y_len,
                                  h.y_block, h.version, h.refined).pack() + data[h.size:]
        with pytest.raises(container.FormatError, match=f"format version {h.version} does not match"):
            progcodec.decode(forged, model=wrong)


def test_refinement_raises_quality_of_the_shipped_model(photo):
    """On a real photo the refined whole file beats the unrefined one, and costs more bytes."""
    plain = progcodec.encode(photo, refine=0)
    refined = progcodec.encode(photo, refine=0.5)
    assert len(refined) > len(plain)
    p0 = psnr(np.asarray(progcodec.decode(plain)), photo)
    p1 = psnr(np.asarray(progcodec.decode(refined)), photo)
    assert p1 > p0 + 0.3, (p0, p1)


def test_refine_is_checked(tiny, ordered):
    img = smooth_image(32, 32)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(progcodec.CodecError, match="refine must be in"):
            progcodec.encode(img, model=ordered, refine=bad)
    with pytest.raises(progcodec.CodecError, match="no order table"):
        progcodec.encode(img, model=tiny, refine=0.5)
    assert container.parse_header(progcodec.encode(img, model=tiny)).version == 1


def test_header_bounds_the_refinement_count(ordered):
    data = bytearray(progcodec.encode(smooth_image(64, 64), model=ordered, refine=0.5))
    h = container.parse_header(bytes(data))
    c = ordered.model.config
    n = 16 * c.M  # one z position: 16 y positions per channel
    assert container.parse_header(bytes(data), c.N, c.M).refined == codec.refine_count(n, 0.5)
    bad = container.Header(h.model_name, h.model_digest, h.width, h.height, h.z_len, h.y_len,
                           h.y_block, h.version, refined=n + 1).pack()
    with pytest.raises(container.FormatError, match="refinement symbols"):
        container.parse_header(bad + bytes(data[h.size:]), c.N, c.M)
    with pytest.raises(ValueError):
        container.Header("m", bytes(8), 1, 1, 0, 0, version=2, refined=1).pack()


def test_cli_refine_option(tmp_path):
    """--refine reaches the file (info shows version and count), a bad value is a usage error,
    and a refine on a model without an order table is a one-line error."""
    png = tmp_path / "img.png"
    Image.fromarray(smooth_image(64, 64)).save(png)
    for refine in ("0", "0.5"):
        out = tmp_path / f"r{refine}.pic"
        r = run("encode", png, "-o", out, "--refine", refine)
        assert r.returncode == 0, r.stderr.decode()
        rec = json.loads(run("info", out, "--json").stdout)
        assert rec["format_version"] == container.VERSION_REFINE_TABLE  # the default has a table
        assert (rec["refinements_total"] > 0) == (refine != "0")
        assert rec["refinements_decodable"] == rec["refinements_total"]
    r = run("encode", png, "-o", tmp_path / "bad.pic", "--refine", "1.5")
    assert r.returncode == 2 and not (tmp_path / "bad.pic").exists()
    assert_clean_error(run("encode", png, "-o", tmp_path / "t.pic", "--refine", "0.5", "--model", TINY),
                       "no order table")


def test_a_failed_batch_keeps_every_symbol_a_symbol_by_symbol_decode_reaches(tabled):
    """entropy._decode_until_failure bisects in batches; it must stop where decoding one symbol
    at a time first fails, on a table-coded refinement run cut short and padded with garbage
    (whether and where a decode fails depends on the bytes: several cuts and paddings)."""
    models = entropy.Models(tabled.model.tables)
    rng = np.random.default_rng(3)
    n = 3000
    levels = rng.integers(0, tabled.model.config.levels, n)
    run = models.run(entropy.REFINE, levels, rng.integers(-4, 5, n))
    enc = entropy._Encoder()
    run.encode(enc, rng.integers(0, 2, n))
    words = enc.get_compressed()
    failed = 0
    for keep in (len(words) // 4, len(words) // 2, 3 * len(words) // 4):
        for pad in (0, 0xFFFFFFFF, 0x80000000):
            stream = np.concatenate([words[:keep], np.full(2, pad, dtype=np.uint32)])
            ref, dec = [], entropy._Decoder(stream)
            try:
                for i in range(n):
                    ref.append(int(run.decode(dec, 1, start=i)[0]))
                continue  # decoded to the end: nothing to compare
            except (AssertionError, ValueError, RuntimeError):
                failed += 1
            got = entropy._decode_until_failure(entropy._Decoder(stream), run, n)
            assert got.tolist() == ref, (keep, pad)
    assert failed >= 2, "too few of the cut streams failed inside the run"

"""Encoder-side latent search (latent_search.py, encode --search): of y alone, with z (so the
means, scales and coding order) fixed, or of y and z together (search_z, the default); the
decoder reads its files unchanged."""
import math

import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container, latent_search, tiling

from conftest import smooth_image


def z_part(data: bytes) -> bytes:
    h = container.parse_header(data)
    return data[h.size:h.size + h.z_len]


def whole_file_quality(img: np.ndarray, data: bytes) -> float:
    return progcodec.codec.psnr(img, np.asarray(progcodec.decode(data)))


def test_search_zero_is_the_plain_encoder(tiny):
    img = smooth_image(64, 96, seed=2)
    assert codec.encode(img, model=tiny, device="cpu", search=0) == codec.encode(img, model=tiny, device="cpu")


@pytest.mark.parametrize("refine", [0, None])
def test_search_of_y_gives_a_smaller_better_file_with_the_same_z(photo, refine):
    """The shipped model on a real photo: fewer bytes and a higher PSNR at once, with and
    without the refinement pass (measured on this crop with progcodec-v29: 941 -> 845 bytes,
    37.57 -> 37.62 dB with --refine 0; 1,865 -> 1,733 bytes, 39.64 -> 40.17 dB with the
    default refinement)."""
    plain = codec.encode(photo, refine=refine)
    searched = codec.encode(photo, refine=refine, search=10, search_z=False)
    assert z_part(searched) == z_part(plain)
    assert len(searched) < len(plain)
    assert whole_file_quality(photo, searched) > whole_file_quality(photo, plain)
    # every prefix still decodes
    h = container.parse_header(searched)
    for n in (h.min_length, (h.min_length + len(searched)) // 2):
        progcodec.decode(searched[:n])


def forced_tiles(photo, monkeypatch):
    """64 px search tiles on the photo crop (6 tiles); the runtime, its y and z."""
    monkeypatch.setattr(codec, "SEARCH_TILE", 64)
    monkeypatch.setattr(codec, "SEARCH_UNTILED_MAX", 0)
    rt = codec.runtime(progcodec.weights.DEFAULT_MODEL, "cpu")
    with torch.no_grad():
        y0 = codec._analysis(rt, photo)
        return rt, y0, codec.encoder_z(rt, y0)


def photo_tiles(photo, **margin):
    """The 64 px tiles of the photo crop that hold pixels (6)."""
    h, w = photo.shape[:2]
    grid = [t for t in tiling.tiles(*codec._padded_size(h, w), 64, untiled_max=0, **margin)
            if t.y0 < h and t.x0 < w]
    assert len(grid) == 6
    return grid


def tiles_moved(photo, y, y0):
    """How many of the photo's tiles have latents that the search moved."""
    return sum(float((y - y0)[:, :, s.y0:s.y1, s.x0:s.x1].abs().amax()) > 0.01
               for s in (t.scaled(16) for t in photo_tiles(photo)))


def test_tiled_search_moves_every_tile(photo, monkeypatch):
    """With tiles forced (64 px), each tile's latents move, and the file still decodes."""
    rt, y0, z = forced_tiles(photo, monkeypatch)
    assert tiles_moved(photo, codec._search(rt, photo, y0, z, 5), y0) == 6
    data = codec.encode(photo, search=5, search_z=False)
    assert z_part(data) == z_part(codec.encode(photo))
    assert whole_file_quality(photo, data) > 30


def test_search_is_checked(tiny):
    with pytest.raises(codec.CodecError, match="search"):
        codec.encode(smooth_image(64, 64), model=tiny, device="cpu", search=-1)


# ---- joint search of y and z (encode(search_z=True)) ----------------------------------------
def test_relaxed_scale_net_matches_the_integer_one():
    """On integer z the float stand-in gives the run-time scale indexes (float32 sums may be
    off by a unit in a rare element), and it has a gradient with respect to z."""
    rt = codec.runtime(progcodec.weights.DEFAULT_MODEL, "cpu")
    _, relaxed, _ = rt.hyper_search
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-3, 4, (1, rt.z_channels, 4, 5), generator=g)
    exact = rt.scale_net(z)
    zf = z.float().requires_grad_(True)
    approx = relaxed(zf)
    assert approx.shape == exact.shape
    diff = (approx.detach() - exact.float()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    approx.sum().backward()
    assert zf.grad.abs().sum() > 0


def test_z_bits_are_the_tables_bits_on_integers(photo):
    """latent_search.z_bits on integer z is the coder's cost of z, within 2% (the coder
    requantizes the table's probabilities) and a few words of overhead."""
    from progcodec import entropy
    rt = codec.runtime(progcodec.weights.DEFAULT_MODEL, "cpu")
    _, _, table = rt.hyper_search
    with torch.no_grad():
        z = codec.encoder_z(rt, codec._analysis(rt, np.concatenate([photo] * 4, axis=1)))
    bits = float(latent_search.z_bits(torch.from_numpy(z)[None], *table))
    coded = 8 * len(entropy.encode_z(z, rt.models))
    assert abs(coded - bits) <= 0.02 * bits + 64
    # between two integers the cost moves linearly and has a gradient
    zf = torch.from_numpy(z)[None].float()
    zf[0, 0, 0, 0] += 0.5
    zf.requires_grad_(True)
    half = latent_search.z_bits(zf, *table)
    half.backward()
    assert zf.grad[0, 0, 0, 0] != 0


@pytest.mark.parametrize("refine", [0, None])
def test_joint_search_beats_the_plain_encoder_at_equal_bytes(photo, refine):
    """search_z moves z too (the z part of the file changes). The shipped model on the photo
    crop, at equal bytes from a short prefix to the whole searched file: the prefixes from the
    middle of the file on gain, and the three longest gain 0.1 dB or more on average. Measured on
    this crop (progcodec-v18): -0.67, +0.03, +0.05, +0.49 dB (refine 0) and +0.17, +0.22, +0.02,
    +0.36 dB (refine default). v16 gained at every prefix; v17 and v18, trained with z bits
    weighted 2 and 2.5, are better plain at their shortest prefixes (v18 by 0.67 dB here with
    refine 0; v17 on Kodak at 0.05 bpp, docs/latent-search.md), so the shortest prefix is not
    asserted. The whole file is much smaller, not always better: the search trades along the curve."""
    plain = codec.encode(photo, refine=refine)
    joint = codec.encode(photo, refine=refine, search=10, search_z=True)
    assert z_part(joint) != z_part(plain)
    h = container.parse_header(joint)
    gains = [whole_file_quality(photo, joint[:n]) - whole_file_quality(photo, plain[:n])
             for n in (h.min_length + 40, (h.min_length + len(joint)) // 3,
                       (h.min_length + len(joint)) // 2, len(joint))]
    assert min(gains[2:]) > 0, gains
    longer = gains[1:]  # the shortest prefix is not asserted (docstring)
    assert sum(longer) / len(longer) > 0.1, gains


def test_tiled_joint_search_searches_every_tile(photo, monkeypatch):
    """With tiles forced (64 px), the search runs tile by tile: every tile is searched, with
    its context, and most tiles' latents move (a tile keeps its latents when its search does
    not lower the hard objective); z moves (the z part of
    the file changes), and the file beats the plain one at equal bytes."""
    rt, y0, z0 = forced_tiles(photo, monkeypatch)
    crops, search = [], latent_search.search_latent_and_hyper

    def spy(g_s, h_mean, scale_net, exact, x, *args, **kwargs):
        crops.append(tuple(x.shape[2:]))
        return search(g_s, h_mean, scale_net, exact, x, *args, **kwargs)
    monkeypatch.setattr(latent_search, "search_latent_and_hyper", spy)
    y, z = codec._search_joint(rt, photo, y0, z0, 5)
    assert crops == [(t.cy1 - t.cy0, t.cx1 - t.cx0)
                     for t in photo_tiles(photo, margin=codec.JOINT_MARGIN)]
    assert z.shape == z0.shape == (rt.z_channels, 2, 3)  # one z position per 64 px tile
    assert tiles_moved(photo, y, y0) >= 4
    plain = codec.encode(photo)
    joint = codec.encode(photo, search=5)
    assert z_part(joint) != z_part(plain)
    for n in (len(joint) // 3, len(joint)):
        assert whole_file_quality(photo, joint[:n]) > whole_file_quality(photo, plain[:n]), n


@pytest.mark.parametrize("score_low", [True, False])
def test_joint_search_scores_short_prefixes_with_the_decoders_synthesis(photo, monkeypatch,
                                                                         score_low):
    """The keep-fractions that keep fewer elements than the model's low_synthesis_keep (of the
    default fractions, 0.01) are reconstructed with g_s_low, as the decoder does; the others
    with g_s. codec.SEARCH_SCORES_G_S_LOW = False scores all of them with g_s."""
    monkeypatch.setattr(codec, "SEARCH_SCORES_G_S_LOW", score_low)
    rt = codec.runtime(progcodec.weights.DEFAULT_MODEL, "cpu")
    with torch.no_grad():
        y0 = codec._analysis(rt, photo)
        z0 = codec.encoder_z(rt, y0)
    n = y0.numel()
    fractions = latent_search.JOINT_KEEP_FRACTIONS
    n_low = sum(math.ceil(q * n) < rt.low_keep * n for q in fractions)
    assert n_low == 1
    batches = {"g_s": [], "g_s_low": []}
    hooks = [rt.g_s_search.register_forward_hook(
        lambda m, inp, out: batches["g_s"].append(inp[0].shape[0]))]
    if score_low:
        hooks.append(rt.low_synthesis_search(n)[0].register_forward_hook(
            lambda m, inp, out: batches["g_s_low"].append(inp[0].shape[0])))
    try:
        codec._search_joint(rt, photo, y0, z0, 2)
    finally:
        for h in hooks:
            h.remove()
    calls = 2 + 2  # two steps, then the hard objective before and after
    if score_low:
        assert batches == {"g_s": [len(fractions) - n_low] * calls, "g_s_low": [n_low] * calls}
    else:
        assert rt.low_synthesis_search(n) is None
        assert batches == {"g_s": [len(fractions)] * calls, "g_s_low": []}


def test_search_z_without_steps_is_the_plain_encoder(tiny):
    img = smooth_image(64, 96, seed=2)
    assert (codec.encode(img, model=tiny, device="cpu", search_z=True)
            == codec.encode(img, model=tiny, device="cpu"))

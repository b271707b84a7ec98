"""Tiled transforms (huge photos): the geometry, and tiled vs whole-image results."""
import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container, tiling

from conftest import smooth_image


@pytest.mark.parametrize("h,w,tile,margin", [
    (64, 64, 64, 64), (192, 320, 64, 64), (704, 1024, 256, 64), (4032, 6016, 512, 64),
    (4032, 6016, 1024, 64), (128, 65536, 1024, 16), (3008, 1984, 512, 0)])
def test_tiles_cover_the_image_exactly_once(h, w, tile, margin):
    grid = tiling.tiles(h, w, tile, margin, untiled_max=0)
    assert grid == tiling.tiles(h, w, tile, margin, untiled_max=0)  # a function of the size only
    cover = np.zeros((h // 16, w // 16), np.int32)
    for t in grid:
        s = t.scaled(16)  # every coordinate is a multiple of 16 (the latent grid)
        assert all(v % 16 == 0 for v in (t.y0, t.y1, t.x0, t.x1, t.cy0, t.cy1, t.cx0, t.cx1))
        assert t.y0 % tile == 0 and t.x0 % tile == 0
        assert t.cy0 == max(0, t.y0 - margin) and t.cy1 == min(h, t.y1 + margin)
        assert t.cx0 == max(0, t.x0 - margin) and t.cx1 == min(w, t.x1 + margin)
        cover[s.y0:s.y1, s.x0:s.x1] += 1
    assert (cover == 1).all()


def test_small_images_are_one_tile_and_bad_sizes_refused():
    assert tiling.tiles(512, 768, 256) == [tiling.Tile(0, 512, 0, 768, 0, 512, 0, 768)]
    assert len(tiling.tiles(2048, 2048, 512)) == 16  # above UNTILED_MAX (2^21 px)
    for args in ((100, 64, 64), (64, 64, 96), (64, 64, 64, 8)):
        with pytest.raises(ValueError):
            tiling.tiles(*args, untiled_max=0)


@pytest.mark.parametrize("margin,exact", [(tiling.MARGIN, True), (16, False)])
def test_margin_covers_the_receptive_field(tiny, monkeypatch, margin, exact):
    """With MARGIN, tiled g_a gives the whole-image y (to rounding); half of it does not."""
    img = smooth_image(130, 200, seed=2)
    rt = codec.runtime(tiny, "cpu")
    with torch.no_grad():
        whole = codec._analysis(rt, img)
        _force_tiles(monkeypatch, 64)
        monkeypatch.setattr(rt, "analysis_margin", margin)  # (tiny has no g_a blocks)
        diff = float((codec._analysis(rt, img) - whole).abs().max())
    assert (diff < 1e-9) == exact, diff


def _force_tiles(monkeypatch, tile):
    monkeypatch.setattr(tiling, "ANALYSIS_TILE", tile)
    monkeypatch.setattr(tiling, "SYNTHESIS_TILE", tile)
    monkeypatch.setattr(tiling, "UNTILED_MAX", 0)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_tiled_and_untiled_agree(which, tiny, photo, monkeypatch):
    """Forced 64 px tiles against the whole-image transforms."""
    model, img = (tiny, smooth_image(130, 200, seed=5)) if which == "tiny" else ("progcodec-v1", photo)
    whole = progcodec.encode(img, model=model, device="cpu")
    whole_out = np.asarray(progcodec.decode(whole, model=model, device="cpu"))
    _force_tiles(monkeypatch, 64)
    assert len(tiling.tiles(*codec._padded_size(*img.shape[:2]), 64)) > 1
    tiled = progcodec.encode(img, model=model, device="cpu")
    tiled_out = np.asarray(progcodec.decode(tiled, model=model, device="cpu"))
    assert tiled_out.shape == img.shape
    assert abs(codec.psnr(img, tiled_out) - codec.psnr(img, whole_out)) <= 0.1
    # the same bytes through tiled synthesis: float32 rounding only
    same_bytes = np.asarray(progcodec.decode(whole, model=model, device="cpu"))
    assert np.abs(same_bytes.astype(int) - whole_out).max() <= 2
    # a prefix decodes through the tiles too
    h = container.parse_header(tiled)
    assert progcodec.decode(tiled[:h.min_length + 40], model=model, device="cpu").size == img.shape[1::-1]


def test_limits_allow_a_24_megapixel_photo(tmp_path):
    import io
    import sys
    import warnings
    from pathlib import Path
    from PIL import Image
    from progcodec import cli  # sets Pillow's decompression-bomb limit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import odd_images
    odd_images._png_header_only(tmp_path / "big.png", 6000, 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning from Pillow
        assert Image.open(io.BytesIO((tmp_path / "big.png").read_bytes())).size == (6000, 4000)
    assert Image.MAX_IMAGE_PIXELS == cli.MAX_PIXELS
    codec.check_image_size(6000, 4000)
    assert container.MAX_PIXELS >= 6000 * 4000
    with pytest.raises(codec.CodecError):
        codec.check_image_size(65535, 65535)

"""Tile geometry for the transforms on large images (a pure function of the image size).

The analysis g_a (four stride-2 5x5 convolutions, per-position GDN) makes latent position j
from pixels 16j-30 .. 16j+30; the synthesis g_s makes pixel p from latents less than 2 from
p/16. So a transform run on a crop that reaches MARGIN = 32 pixels (2 latents) past its tile
gives the tile's interior as the whole-image transform would, up to floating-point rounding
(measured: y identical, pixels within 1; 16 pixels changes y by up to 0.9). Tiles start
at multiples of TILE, crops at multiples of 16: the stride grid is the same as the image's.

Images of at most UNTILED_MAX (padded) pixels are one tile, the whole image: their bytes are
those of the untiled encoder. The geometry depends on nothing but the image size, so the
encoder's bytes do not depend on the machine.
"""
from __future__ import annotations

from dataclasses import dataclass

# Pixels per tile side (multiples of 64). g_a runs in float64 with 128 channels at half
# resolution: a 512 px tile (576 with margins) peaks near 0.4 GB; g_s in float32 takes 1024.
ANALYSIS_TILE = 512
SYNTHESIS_TILE = 1024
MARGIN = 32  # pixels of context on every side (multiple of 16): the receptive fields' bound
UNTILED_MAX = 1 << 21  # padded images up to this many pixels are transformed whole


@dataclass(frozen=True)
class Tile:
    """Rows/columns [y0, y1) x [x0, x1) are this tile's; the crop [cy0, cy1) x [cx0, cx1)
    (the tile plus the margin, clipped to the image) is what the transform sees."""
    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int

    def scaled(self, k: int) -> "Tile":
        """The same tile in units of k pixels (all coordinates are multiples of k)."""
        return Tile(*(v // k for v in (self.y0, self.y1, self.x0, self.x1,
                                       self.cy0, self.cy1, self.cx0, self.cx1)))


def tiles(height: int, width: int, tile: int, margin: int | None = None,
          untiled_max: int | None = None) -> list[Tile]:
    """Tiles covering a padded height x width image (multiples of 64) exactly, raster order."""
    margin = MARGIN if margin is None else margin
    untiled_max = UNTILED_MAX if untiled_max is None else untiled_max
    if height % 64 or width % 64 or height < 64 or width < 64:
        raise ValueError(f"padded size {width}x{height} is not a positive multiple of 64")
    if tile % 64 or tile < 64 or margin % 16 or margin < 0:
        raise ValueError(f"tile {tile} must be a multiple of 64, margin {margin} of 16")
    if height * width <= untiled_max:
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    out = []
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - margin), min(height, y1 + margin),
                            max(0, x0 - margin), min(width, x1 + margin)))
    return out

"""Both syntheses of a model with g_s_low at keep-fractions around its threshold: where the
decoder switches from g_s_low to g_s, does the quality drop, and which network is better
at each fraction? (ModelConfig.low_synthesis_keep; docs/ablation.md.)

    python scripts/low_synthesis_switch.py runs/s1-p0.safetensors ../shared/data/kodak [LIMIT]
    python scripts/low_synthesis_switch.py runs/s1-p0.safetensors ../shared/data/train 8 train

With "train", the images are the first LIMIT of the training split of that folder (never the
held-out photos): the place to choose a switching threshold without looking at a test set.

For each image: the plain encoder's latent, the first k elements of the coding order kept
(k = ceil(q x elements)) and the rest set to their mean, as a decoder of such a prefix has it;
mean PSNR-RGB over the images of g_s_low's and g_s's reconstruction at each q, and which one
the decoder uses.
"""
import math
import sys

import numpy as np
import torch

from progcodec import codec, entropy
from progcodec.metrics import psnr
from progcodec.model import coding_order
from progcodec.train import list_images, split_train_validation

FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.0999, 0.1001, 0.12,
             0.15, 0.2, 0.3, 0.5, 1.0)


@torch.no_grad()
def main(model: str, folder: str, limit: int = 0, split: str = "") -> None:
    torch.set_num_threads(2)
    loaded = codec.load_model(model)
    rt = codec.runtime(loaded, "cpu")
    if rt.g_s_low is None:
        raise SystemExit(f"{model} has no g_s_low")
    files = list_images(folder)
    if split == "train":
        files = split_train_validation(files)[0]
    files = files[:limit or None]
    rows = {q: ([], []) for q in FRACTIONS}
    for f in files:
        rgb = codec.to_rgb_array(codec.Image.open(f))
        h, w = rgb.shape[:2]
        y = codec._analysis(rt, rgb)
        z, levels, sym, _ = codec.encoder_symbols(rt, y)  # in coding order, as encode() codes
        sym = torch.from_numpy(entropy.clamp_y_symbols(sym, levels, rt.models)).to(torch.float64)
        mu, idx = rt.hyper(torch.from_numpy(z)[None])
        order = coding_order(idx, rt.levels, rt.order_rank)
        n = len(order)
        for q in FRACTIONS:
            k = math.ceil(q * n)
            y_hat = mu.clone()
            y_hat[order[:k]] += sym[:k]
            y_hat = y_hat.view(1, rt.y_channels, *y.shape[2:]).float()
            for net, out in zip((rt.g_s_low, rt.g_s), rows[q]):
                x = net(y_hat.contiguous(memory_format=torch.channels_last)).clamp_(0, 1)
                x = (x[0, :, :h, :w] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                out.append(psnr(x, rgb))
    print(f"{loaded.name}, low_synthesis_keep {rt.low_keep}, {len(files)} images of {folder}"
          + (" (training split)" if split == "train" else ""))
    print("| keep-fraction | g_s_low | g_s | difference | decoder uses |")
    print("|---|---|---|---|---|")
    for q, (low, main_) in rows.items():
        a, b = float(np.mean(low)), float(np.mean(main_))
        uses = "g_s_low" if q < rt.low_keep else "g_s"
        print(f"| {q:g} | {a:.2f} | {b:.2f} | {a - b:+.2f} | {uses} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0,
         sys.argv[4] if len(sys.argv) > 4 else "")

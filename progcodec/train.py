"""Training of the variance-masked model: `python -m progcodec.train DATA_DIR --out runs/x`.

Random crops of a folder of photos; every image of a batch gets its own keep-fraction q (by
default 25% q = 1, the rest log-uniform down to q_min; --q-one and --q-low reweight); loss = sum
over images of bits/pixel(q) + lambda(q) * 255^2 * MSE(q), with lambda log-log interpolated
between --lambda-min at q_min and --lambda-max at q = 1. bf16 autocast with channels_last, on
CPU (AMX) or CUDA when present. A checkpoint (model + optimizer) is written every few minutes
and on exit; rerunning the same command resumes from it. `python -m progcodec.export` turns a
checkpoint into shipped weights.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .model import ADDABLE_PARTS, BLOCK_PARTS, ORDERS, ModelConfig, ProgressiveModel, lambda_of_keep

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def split_train_validation(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Every 50th image (sorted by name) is held out as validation: never trained on."""
    val = files[::50]
    held = set(val)
    return [f for f in files if f not in held], val


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class CropSampler:
    """All training images in memory as uint8; random crops with flips, and with colour=True
    colour augmentation (see colour_jitter)."""

    def __init__(self, files: list[Path], patch: int, seed: int, colour: bool = False):
        self.images = [im for im in (load_rgb(f) for f in files)
                       if im.shape[0] >= patch and im.shape[1] >= patch]
        self.patch = patch
        self.colour = colour
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        """n crops as uint8 (n, 3, patch, patch)."""
        out = np.empty((n, self.patch, self.patch, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.patch + 1)
            x = self.rng.integers(im.shape[1] - self.patch + 1)
            crop = im[y:y + self.patch, x:x + self.patch]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = colour_jitter(crop, self.rng) if self.colour else crop
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # uint8: 4x less to copy to a GPU


def log_uniform(rng: random.Random | np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def colour_jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half the crops get their RGB channels permuted, half (independently) their saturation
    scaled by a log-uniform factor in [0.7, 1.5]. Tried because continuing training degraded the
    low rates of Kodak's saturated reds (kodim02, kodim04); measured not to cure that
    (docs/ablation.md), kept as an option, off by default."""
    if rng.random() < 0.5:
        crop = crop[:, :, rng.permutation(3)]
    if rng.random() < 0.5:
        f = crop.astype(np.float32)
        grey = f.mean(axis=2, keepdims=True)
        s = log_uniform(rng, 0.7, 1.5)
        crop = np.clip(np.rint(grey + s * (f - grey)), 0, 255).astype(np.uint8)
    return crop


# upper end of --q-low's band: about 0.15 bpp on Kodak with progcodec-v18 (mean keep-fraction
# 0.050 at the 0.15 bpp cut, runs/eval-kodak-v18-re)
LOW_KEEP = 0.05


def whole_file_keep(rng: random.Random, refine_max: float) -> float:
    """The keep-fraction of a whole-file draw: 1, or with refine_max > 0, 1 + uniform(0,
    refine_max), the whole latent with a refinement bit for that fraction of it (model.forward),
    as the top of a file is decoded."""
    return 1.0 + rng.uniform(0.0, refine_max) if refine_max else 1.0


def sample_keep(n: int, q_min: float, rng: random.Random, low_bias: bool = False,
                q_one: float = 0.25, q_low: float = 0.0, refine_max: float = 0.0) -> torch.Tensor:
    """Keep-fractions: a share q_one at q = 1, the rest log-uniform in [q_min, 1]; with q_low > 0,
    that share of the rest is drawn log-uniform in [q_min, LOW_KEEP] instead (more weight on the
    lowest cuts, where the curve trails JPEG 2000). refine_max > 0 adds refinement bits to the
    q = 1 share (whole_file_keep). low_bias (decoder fine-tuning, as in the WACV 2025 paper):
    80% log-uniform in [q_min, 0.15], 20% in [0.15, 1]."""
    def one() -> float:
        if low_bias:
            return log_uniform(rng, *((q_min, 0.15) if rng.random() < 0.8 else (0.15, 1.0)))
        if rng.random() < q_one:
            return whole_file_keep(rng, refine_max)
        if q_low > 0 and rng.random() < q_low:
            return log_uniform(rng, q_min, LOW_KEEP)
        return log_uniform(rng, q_min, 1.0)
    return torch.tensor([one() for _ in range(n)])


def sample_band(n: int, lo: float, hi: float, rng: random.Random, q_one: float = 0.0,
                refine_max: float = 0.0) -> torch.Tensor:
    """Keep-fractions for training one synthesis on its range: a share q_one at q = 1, the rest
    log-uniform in [lo, hi]. With q_one = 0 no draw is spent on the share; refine_max > 0 adds
    refinement bits to it (whole_file_keep)."""
    return torch.tensor([whole_file_keep(rng, refine_max) if q_one and rng.random() < q_one
                         else log_uniform(rng, lo, hi)
                         for _ in range(n)])


def train_only(model: ProgressiveModel, prefixes: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Freeze every parameter except those whose names start with one of `prefixes`; returns
    those, for the optimizer."""
    trainable = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def param_groups(model: ProgressiveModel, side_lr_mult: float) -> list[dict]:
    """Adam parameter groups: the trainable parameters (all of a new model, or what train_only
    left), the synthesis side layer and dequantization offsets apart, with their own
    learning-rate multiplier (they start at zero when added to trained weights)."""
    side, rest = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (side if n.startswith(("g_s_side.", "g_s_offset")) else rest).append(p)
    groups = [{"params": rest, "lr_mult": 1.0}]
    if side:
        groups.append({"params": side, "lr_mult": side_lr_mult})
    return groups


def make_optimizer(model: ProgressiveModel, args) -> torch.optim.Adam:
    """Adam over what this run trains: one synthesis (--synthesis-keep-max / -min), the decoder
    side (--finetune-decoder), or everything (param_groups). Built before a checkpoint of the
    run is resumed, so the saved optimizer state always fits it."""
    config = model.config
    if args.train_encoder and (args.synthesis_keep_max or args.synthesis_keep_min
                               or args.finetune_decoder):
        raise SystemExit("--train-encoder trains the encoder side; --synthesis-keep-max/-min "
                         "and --finetune-decoder train decoder networks: give one")
    if args.synthesis_keep_max or args.synthesis_keep_min:
        # Only one synthesis trains: the one of short prefixes (g_s_low when the model has one,
        # else g_s) with --synthesis-keep-max, the main one with --synthesis-keep-min. The rate
        # terms do not reach it, so its loss is lambda(q) * MSE over the prefixes it serves.
        if args.synthesis_keep_max and args.synthesis_keep_min:
            raise SystemExit("--synthesis-keep-max and --synthesis-keep-min train different "
                             "networks: give one")
        if model.g_s_low is not None and args.synthesis_keep_max > config.low_synthesis_keep:
            raise SystemExit(f"--synthesis-keep-max {args.synthesis_keep_max} is above the "
                             f"model's low_synthesis_keep {config.low_synthesis_keep}")
        if args.synthesis_keep_min and not (
                model.g_s_low is not None and args.synthesis_keep_min >= config.low_synthesis_keep):
            raise SystemExit(f"--synthesis-keep-min needs a model with g_s_low whose "
                             f"low_synthesis_keep is at most {args.synthesis_keep_min}")
        if model.g_s_low is not None and args.synthesis_keep_max:
            return torch.optim.Adam(train_only(model, ("g_s_low.",)), lr=args.lr)
        # g_s, and its dequantization offsets (if any) at --side-lr-mult: a table that
        # starts at zero, as a side layer does
        train_only(model, ("g_s.", "g_s_offset"))
        return torch.optim.Adam(param_groups(model, args.side_lr_mult), lr=args.lr)
    if args.finetune_decoder:
        return torch.optim.Adam(train_only(model, ("g_s.", "g_s_side.", "h_mean.")), lr=args.lr)
    if args.train_encoder:
        # The encoder side alone (g_a, h_a): every network the decoder runs, the z density and
        # the coding tables stay as they are, so only the y and z an image gets can change.
        return torch.optim.Adam(train_only(model, ("g_a.", "h_a.")), lr=args.lr)
    return torch.optim.Adam(param_groups(model, args.side_lr_mult), lr=args.lr)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_step(model, opt, x: torch.Tensor, keep: torch.Tensor, lam_min: float, lam_max: float,
               q_min: float, bf16: bool = True, z_weight: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on batch x with keep-fractions keep (bf16 autocast unless bf16=False).
    z_weight scales the z bits in the loss (1: the true rate). `model` may be a torch.compile
    wrapper. Returns the loss and the per-image bpp (true rate) and MSE, detached."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, keep)
    mse = ((out["x_hat"].float() - x) ** 2).flatten(1).mean(1)
    pixels = x.shape[2] * x.shape[3]
    bpp = out["bits"] / pixels
    bpp_objective = bpp + (z_weight - 1.0) * out["bits_z"] / pixels
    lam = lambda_of_keep(keep, lam_min, lam_max, q_min)
    loss = (bpp_objective + lam * 255**2 * mse).mean() + out["range_penalty"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return loss.detach(), bpp.detach(), mse.detach()


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


OBJECTIVE_ARGS = ("lambda_min", "lambda_max", "q_min", "q_one", "q_low", "patch", "batch",
                  "z_weight", "refine_max")


def objective_changes(saved_args: dict, args) -> list[str]:
    """'name saved -> now' for each objective option in which this run differs from the run
    that wrote an --init checkpoint (its args are stored as strings)."""
    out = []
    for k in OBJECTIVE_ARGS:
        if k in saved_args and float(saved_args[k]) != float(getattr(args, k)):
            out.append(f"{k} {saved_args[k]} -> {getattr(args, k)}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="folder of training photos (never Kodak)")
    ap.add_argument("--out", type=Path, required=True, help="run folder: checkpoint and log")
    ap.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    # defaults: the recipe of the shipped models' runs (progcodec-v12 to v14 cards)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (cosine decay)")
    ap.add_argument("--minutes", type=float, default=0,
                    help="time budget: the schedule follows elapsed time and stops at the budget "
                         "(for runs that must end with a session); 0: follow --steps")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--lambda-min", type=float, default=0.0015)
    ap.add_argument("--lambda-max", type=float, default=0.025)
    ap.add_argument("--q-min", type=float, default=0.005, help="smallest keep-fraction sampled")
    ap.add_argument("--q-one", type=float, default=0.25,
                    help="share of the batch trained at keep-fraction 1 (the whole file)")
    ap.add_argument("--q-low", type=float, default=0.0,
                    help=f"share of the other keep-fractions drawn from [q-min, {LOW_KEEP}] instead "
                         "of [q-min, 1] (0: plain log-uniform)")
    ap.add_argument("--z-weight", type=float, default=1.0,
                    help="weight of the z bits in the loss (1: the true rate); above 1 asks for a "
                         "cheaper z, the part every prefix pays")
    ap.add_argument("--train-encoder", action="store_true",
                    help="train the encoder side alone (g_a and h_a, e.g. with new residual "
                         "blocks: --config '{\"analysis_blocks\": 2}'); the decoder's networks, "
                         "the scale network and the z density stay frozen")
    ap.add_argument("--finetune-decoder", action="store_true",
                    help="train only the decoder side (g_s, h_mean) on mostly small keep-fractions; "
                         "the encoder side, z density and scale net stay frozen")
    ap.add_argument("--synthesis-keep-max", type=float, default=0.0,
                    help="train only the synthesis of short prefixes (g_s_low, added with --config "
                         "'{\"low_synthesis_keep\": Q}' as a copy of g_s; else g_s itself) on "
                         "keep-fractions log-uniform in [q-min, this], under frozen encoder "
                         "and hyper networks (0: off)")
    ap.add_argument("--synthesis-keep-min", type=float, default=0.0,
                    help="train only g_s of a model with g_s_low, on the prefixes it serves: "
                         "--q-one of the batch at keep-fraction 1, the rest log-uniform in "
                         "[this, 1]; this must be at least the model's low_synthesis_keep (0: off)")
    ap.add_argument("--refine-max", type=float, default=0.0,
                    help="a full run or --synthesis-keep-min: the --q-one share is the whole latent with a "
                         "refinement bit for the first F of its elements in coding order, F "
                         "uniform in [0, this], placed as the decoder places them (format.md "
                         "5.1; encode's default --refine is 0.4); 0: the whole latent alone")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                    help="bf16: autocast (AMX on CPU, tensor cores on CUDA), the entropy model "
                         "and likelihoods stay fp32; fp32: no autocast")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--keep-every", type=int, default=0,
                    help="also keep the weights every N steps as step{N}.pt (for learning curves)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path,
                    help="start from these weights (a checkpoint.pt, or a shipped .safetensors "
                         "file with its training tensors, inline or in the NAME.resume file "
                         "beside it), with a new optimizer")
    ap.add_argument("--config", type=str, default="{}",
                    help="ModelConfig overrides as JSON; with --init, only parts the initial "
                         "weights lack may be added, e.g. '{\"decoder_side\": true}', or the "
                         "latent widened, e.g. '{\"M\": 320}' (widen.py)")
    ap.add_argument("--side-lr-mult", type=float, default=1.0,
                    help="learning-rate multiplier of the synthesis side layer (decoder_side) "
                         "and of g_s's dequantization offsets (offset_symbols)")
    ap.add_argument("--augment", default="flip", choices=["flip", "colour"],
                    help="flip: random crops with horizontal flips; colour: also permute the RGB "
                         "channels and scale saturation (half the crops each)")
    ap.add_argument("--order", default="scale", choices=[o for o in ORDERS if o != "table"],
                    help="element order of the training masks: scale, channel (ProgDTD tail "
                         "drop) or raster. The codec codes any exported model by predicted "
                         "scale; channel-ordered masks measured better (docs/ablation.md)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"
    log = open(args.out / "train.log", "a", buffering=1)

    overrides = json.loads(args.config)  # checked below, merged with --init's config if any
    step = 0
    state = None
    init_state = None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        config = ModelConfig(**state["config"])
    elif args.init:
        if args.init.suffix == ".safetensors":  # a shipped weight file (+ its .resume sidecar)
            from .weights import training_state_from_weights
            config, init_state = training_state_from_weights(args.init)
        else:
            saved = torch.load(args.init, map_location=device, weights_only=False)
            config, init_state = ModelConfig(**saved.get("config", {})), saved["model"]
            changed = objective_changes(saved.get("args") or {}, args)
            if changed:  # a continuation with another objective is rarely meant
                msg = (f"note: --init {args.init} was trained with a different objective: "
                       + ", ".join(changed))
                print(msg, file=log)
                print(msg, file=sys.stderr)
        # --config may add parts the initial weights lack (decoder_side) or widen the latent
        # (M, widen.py); it never reshapes anything else
        old_m = config.M
        config = ModelConfig(**(config.to_dict() | overrides))
        if config.M != old_m:
            from .widen import widen_latent
            init_state = widen_latent(init_state, old_m, config.M, args.seed)
    else:
        config = ModelConfig(**overrides)
    model = ProgressiveModel(config).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, args)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed from {ckpt_path} at step {step}", file=log)
    elif init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(not k.startswith(ADDABLE_PARTS) for k in missing):
            raise SystemExit(f"--init {args.init} does not fit this model: missing {missing}, "
                             f"unexpected {unexpected}")
        if any(k.startswith("g_s_low.") and not k.startswith(BLOCK_PARTS) for k in missing):
            # g_s_low added: it starts as a copy of g_s (strict=False: only what both have)
            model.g_s_low.load_state_dict(model.g_s.state_dict(), strict=False)
        print(f"initialised from {args.init}" + (f" (new: {missing})" if missing else ""), file=log)

    # the keep-fraction band of a one-synthesis run (lo, hi, share at q = 1, its refinement
    # fractions up to), else None
    band = ((args.q_min, args.synthesis_keep_max, 0.0, 0.0) if args.synthesis_keep_max else
            (args.synthesis_keep_min, 1.0, args.q_one, args.refine_max) if args.synthesis_keep_min
            else None)
    if args.refine_max and (args.synthesis_keep_max or args.finetune_decoder):
        raise SystemExit("--refine-max applies to a full run or a --synthesis-keep-min run")
    model.mask_order = args.order
    files, val = split_train_validation(list_images(args.data))
    t0 = time.time()
    sampler = CropSampler(files, args.patch, args.seed + step, colour=args.augment == "colour")
    print(f"{len(sampler.images)} training images ({len(val)} held out) loaded in "
          f"{time.time() - t0:.0f}s; device {device}; threads {torch.get_num_threads()}; "
          f"config {config.to_dict()}; args {vars(args)}", file=log)
    rng = random.Random(args.seed + step)
    stop = {"now": False}

    def request_stop(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def checkpoint():
        save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "config": config.to_dict(), "args": {k: str(v) for k, v in vars(args).items()}},
                    ckpt_path)

    last_ckpt = time.time()
    acc = {"n": 0, "loss": 0.0, "bpp1": 0.0, "mse1": 0.0, "n1": 0, "bppq": 0.0, "mseq": 0.0, "nq": 0}
    t_log = time.time()
    model.train()
    t_start, step_start = time.time(), step

    def progress_total() -> int:
        """Total steps for the schedule: fixed, or extrapolated from the time budget."""
        if not args.minutes:
            return args.steps
        elapsed = time.time() - t_start
        if step - step_start < 20:
            return max(args.steps, step + 1)
        rate = (step - step_start) / elapsed
        return int(step + rate * max(0.0, args.minutes * 60 - elapsed))

    while not stop["now"]:
        total = progress_total()
        if step >= total:
            break
        lr = learning_rate(step, total, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        x = sampler.batch(args.batch).to(device).float().div_(255).contiguous(
            memory_format=torch.channels_last)
        keep = (sample_band(args.batch, *band[:2], rng, *band[2:]) if band else
                sample_keep(args.batch, args.q_min, rng, args.finetune_decoder,
                            args.q_one, args.q_low, args.refine_max)).to(device)
        loss, bpp, mse = train_step(model, opt, x, keep, args.lambda_min, args.lambda_max,
                                    args.q_min, args.precision == "bf16", args.z_weight)
        step += 1

        full = keep >= 1.0
        acc["n"] += 1
        acc["loss"] += loss.item()
        acc["n1"] += int(full.sum())
        acc["bpp1"] += float(bpp[full].sum())
        acc["mse1"] += float(mse[full].sum())
        acc["nq"] += int((~full).sum())
        acc["bppq"] += float(bpp[~full].sum())
        acc["mseq"] += float(mse[~full].sum())
        if step % args.log_every == 0:
            def psnr(m, n):
                return 10 * math.log10(n / m) if m > 0 and n else float("nan")
            dt = time.time() - t_log
            print(f"step {step} lr {lr:.2e} loss {acc['loss'] / acc['n']:.4f} "
                  f"q=1: bpp {acc['bpp1'] / max(1, acc['n1']):.3f} psnr {psnr(acc['mse1'], acc['n1']):.2f} | "
                  f"q<1: bpp {acc['bppq'] / max(1, acc['nq']):.3f} psnr {psnr(acc['mseq'], acc['nq']):.2f} | "
                  f"{acc['n'] / dt:.2f} steps/s", file=log)
            acc = dict.fromkeys(acc, 0) | {"loss": 0.0}
            t_log = time.time()
        if args.keep_every and step % args.keep_every == 0:
            save_atomic({"model": model.state_dict(), "step": step, "config": config.to_dict()},
                        args.out / f"step{step:06d}.pt")
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    print(f"stopped at step {step}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training, export and the integer scale network's agreement with its training emulation."""
import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

import progcodec
from progcodec import train
from progcodec.export import runtime_model_from_trained
from progcodec.intnet import Z_GAIN
from progcodec.model import ModelConfig, ProgressiveModel, element_order
from progcodec.weights import load_model, save_weights, training_state_from_weights

from conftest import smooth_image
from make_tiny_model import tiny_trained_model


def test_train_resume_export_roundtrip(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(6):
        Image.fromarray(smooth_image(80, 96, seed=i)).save(data / f"p{i}.png")
    cfg = json.dumps({"N": 8, "M": 12, "H": 8})
    common = [str(data), "--out", str(tmp_path / "run"), "--batch", "2", "--patch", "64",
              "--log-every", "1", "--warmup", "1", "--config", cfg]
    assert train.main(common + ["--steps", "2", "--keep-every", "2"]) == 0
    assert train.main(common + ["--steps", "4", "--keep-every", "2"]) == 0  # resumes at step 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed from" in log and "step 4 " in log and "step 3 " in log
    # --keep-every leaves the weights of steps 2 and 4; the last are the final checkpoint's
    kept = sorted(p.name for p in (tmp_path / "run").glob("step*.pt"))
    assert kept == ["step000002.pt", "step000004.pt"]
    snap = torch.load(tmp_path / "run" / "step000004.pt", weights_only=False)
    final = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert snap["step"] == final["step"] == 4
    assert all(torch.equal(snap["model"][k], final["model"][k]) for k in final["model"])
    early = torch.load(tmp_path / "run" / "step000002.pt", weights_only=False)["model"]
    assert not all(torch.equal(early[k], final["model"][k]) for k in final["model"])
    assert "5 training images (1 held out)" in log

    from progcodec.export import main as export_main
    out = tmp_path / "m.safetensors"
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), str(out), "--name", "t"]) == 0
    m = load_model(out)
    img = smooth_image(40, 60)
    assert progcodec.decode(progcodec.encode(img, model=m), model=m).size == (60, 40)
    assert m.model.tables.order_rank is None
    ordered = tmp_path / "o.safetensors"
    assert export_main([str(out), str(ordered), "--name", "o", "--order-images", str(data),
                        "--order-crop", "64", "--order-count", "2"]) == 0
    mo = load_model(ordered)
    rank = mo.model.tables.order_rank
    assert sorted(rank.flatten().tolist()) == list(range(rank.numel()))
    assert progcodec.decode(progcodec.encode(img, model=mo), model=mo).size == (60, 40)
    # --gain-power 0: every channel weighs the same, so each level's channels take consecutive
    # ranks in channel order (the measured gains above interleave them)
    flat = tmp_path / "f.safetensors"
    assert export_main([str(out), str(flat), "--name", "f", "--order-images", str(data),
                        "--order-crop", "64", "--order-count", "2", "--gain-power", "0"]) == 0
    flat_rank = load_model(flat).model.tables.order_rank
    assert torch.equal(flat_rank[1:] - flat_rank[:-1], torch.ones_like(flat_rank[1:]))
    assert not torch.equal(rank[1:] - rank[:-1], torch.ones_like(rank[1:]))
    # resuming from the shipped-style file restores the training model exactly (fp16 storage)
    config, state = training_state_from_weights(out)
    again = ProgressiveModel(config)
    again.load_state_dict(state)
    before = {k: v.clone() for k, v in again.state_dict().items()}
    assert train.main([str(data), "--out", str(tmp_path / "run2"), "--batch", "2", "--patch", "64",
                       "--steps", "2", "--init", str(out), "--finetune-decoder"]) == 0
    after = torch.load(tmp_path / "run2" / "checkpoint.pt", weights_only=False)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("g_s.", "h_mean.")) for k in changed), changed


def test_validation_split_is_every_50th():
    files = [f"img{i:04d}.png" for i in range(120)]
    tr, val = train.split_train_validation(files)
    assert val == ["img0000.png", "img0050.png", "img0100.png"]
    assert not set(tr) & set(val) and len(tr) + len(val) == 120


def test_integer_scale_net_matches_its_training_emulation():
    """The exported integer net gives the index the QAT net trained with (float32 emulation
    can differ only where an accumulator exceeds float32's exact range or sits on a tie)."""
    trained = tiny_trained_model(seed=7)
    runtime = runtime_model_from_trained(trained)
    z = torch.from_numpy(np.random.default_rng(1).integers(-8, 9, (2, 8, 4, 5)))
    with torch.no_grad():
        emulated, _ = trained.scale_net(z)
    exact = runtime.scale_net(z)
    agree = (emulated.round().long() == exact).float().mean().item()
    assert agree > 0.99, agree
    assert exact.min() >= 0 and exact.max() < trained.config.levels


def test_keep_fraction_masks_by_rank():
    torch.manual_seed(0)
    m = ProgressiveModel(ModelConfig(N=8, M=12, H=8))
    x = torch.rand(3, 3, 64, 64)
    out = m(x, torch.tensor([1.0, 0.1, 0.0001]))
    bits_y = out["bits"] - out["bits_z"]
    assert bits_y[0] > bits_y[1] > bits_y[2] >= 0
    assert torch.isfinite(out["x_hat"]).all()


def test_keep_fraction_sampling_shares():
    """--q-one sets the share at q = 1; --q-low moves that share of the rest into [q_min, 0.05]."""
    n = 4000
    plain = train.sample_keep(n, 0.005, random.Random(1))
    low = train.sample_keep(n, 0.005, random.Random(1), q_one=0.1, q_low=0.5)
    assert abs(float((plain == 1).float().mean()) - 0.25) < 0.03
    assert abs(float((low == 1).float().mean()) - 0.10) < 0.03
    assert float(plain.min()) >= 0.005 and float(low.min()) >= 0.005
    # log-uniform over [0.005, 1]: P(q < 0.05 | q < 1) = log(10) / log(200) = 0.43;
    # with half of the rest in [0.005, 0.05]: 0.5 + 0.5 * 0.43 = 0.72
    for ks, want in ((plain, 0.435), (low, 0.717)):
        rest = ks[ks < 1]
        assert abs(float((rest < train.LOW_KEEP).float().mean()) - want) < 0.04
    only_low = train.sample_keep(200, 0.005, random.Random(2), q_one=0.0, q_low=1.0)
    assert float(only_low.max()) <= train.LOW_KEEP


def test_lambda_schedule_endpoints():
    q = torch.tensor([0.005, 1.0, 0.0707])
    lam = train.lambda_of_keep(q, 0.002, 0.032, 0.005)
    assert lam[0].item() == pytest.approx(0.002) and lam[1].item() == pytest.approx(0.032)
    assert lam[2].item() == pytest.approx(0.008, rel=0.02)  # log-log midpoint


def test_element_orders_are_the_documented_permutations():
    from progcodec.model import coding_order
    c, h, w = 3, 2, 2
    idx = torch.tensor([[5, 1, 5, 0, 2, 2, 9, 1, 0, 3, 3, 4]])
    scale = element_order(idx, (c, h, w), "scale", 10)
    assert torch.equal(scale, coding_order(idx, 10))
    assert idx[0, scale[0]].tolist() == sorted(idx[0].tolist(), reverse=True)
    assert element_order(idx, (c, h, w), "channel", 10)[0].tolist() == list(range(12))
    # raster: every channel of position (0,0), then of (0,1), ...: flat index = ch*4 + pos
    assert element_order(idx, (c, h, w), "raster", 10)[0].tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    with pytest.raises(ValueError):
        element_order(idx, (c, h, w), "zigzag", 10)


@pytest.mark.parametrize("order", ["channel", "raster"])
def test_training_masks_follow_the_ablation_order(order):
    """With a fixed order, a keep-fraction of 1/3 of a 3-channel latent sends exactly channel 0
    (channel order) or the first 16 of 48 elements in position-major order (raster order);
    every other element is its mean."""
    torch.manual_seed(0)
    m = ProgressiveModel(ModelConfig(N=8, M=3, H=8))
    m.mask_order = order
    with torch.no_grad():  # a large latent: most residuals round away from 0
        m.g_a[-1].weight.mul_(100)
    seen = {}
    m.g_s.register_forward_pre_hook(lambda mod, args: seen.setdefault("y_in", args[0].detach()))
    x = torch.rand(1, 3, 64, 64)
    m(x, torch.tensor([1 / 3]))
    with torch.no_grad():
        y = m.g_a(x).float()
        mu = m.h_mean(torch.round(m.h_a(y))).float()
    y_hat = torch.round(y - mu) + mu
    expect = element_order(torch.zeros(1, 48, dtype=torch.long), (3, 4, 4), order, 2)[0][:16]
    kept = torch.zeros(48, dtype=torch.bool)
    kept[expect] = True
    kept = kept.view(1, 3, 4, 4)
    assert torch.allclose(seen["y_in"], torch.where(kept, y_hat, mu), atol=1e-5)
    assert (y_hat != mu)[~kept].float().mean() > 0.5  # the check above could see a wrong mask


def test_colour_jitter_changes_colour_only():
    """Colour augmentation permutes channels / scales saturation: a grey crop comes back
    unchanged, a coloured crop keeps its shape, dtype and (per pixel) channel mean within
    rounding and clipping, and is changed in some draws but not all."""
    import numpy as np
    from progcodec.train import colour_jitter
    rng = np.random.default_rng(0)
    grey = np.repeat(np.random.default_rng(1).integers(0, 256, (16, 16, 1), dtype=np.uint8), 3, axis=2)
    assert all((colour_jitter(grey, rng) == grey).all() for _ in range(20))
    crop = np.random.default_rng(2).integers(60, 200, (16, 16, 3), dtype=np.uint8)
    outs = [colour_jitter(crop, rng) for _ in range(60)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    changed = sum(not (o == crop).all() for o in outs)
    assert 20 < changed < 60
    for o in outs:
        assert np.abs(o.astype(float).mean(axis=2) - crop.astype(float).mean(axis=2)).max() <= 1.0


def test_continuing_with_another_objective_is_noted(tmp_path, capsys):
    """--init from a checkpoint trained with other lambdas or patches says so (a continuation
    with the defaults once silently changed the objective of a whole run)."""
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(4):
        Image.fromarray(smooth_image(80, 96, seed=i)).save(data / f"p{i}.png")
    common = ["--batch", "2", "--patch", "64", "--steps", "1", "--warmup", "1",
              "--config", json.dumps({"N": 8, "M": 12, "H": 8})]
    assert train.main([str(data), "--out", str(tmp_path / "a"), "--lambda-max", "0.03"] + common) == 0
    init = ["--init", str(tmp_path / "a" / "checkpoint.pt")]
    capsys.readouterr()
    assert train.main([str(data), "--out", str(tmp_path / "b"), "--lambda-max", "0.03"] + init + common) == 0
    assert "different objective" not in capsys.readouterr().err
    assert train.main([str(data), "--out", str(tmp_path / "c")] + init + common) == 0
    err = capsys.readouterr().err
    assert "different objective: lambda_max 0.03 -> 0.025" in err
    assert "different objective" in (tmp_path / "c" / "train.log").read_text()


def test_z_weight_scales_only_the_z_bits_of_the_loss():
    """--z-weight w adds (w - 1) x z bits/pixel to each image's loss; the reported bpp stays the
    true rate."""
    torch.manual_seed(0)
    m = ProgressiveModel(ModelConfig(N=8, M=12, H=8))
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # no update: both calls see the same weights
    x = torch.rand(2, 3, 64, 64)
    keep = torch.tensor([1.0, 0.1])
    runs = {}
    for w in (1.0, 1.5):
        torch.manual_seed(1)  # the same quantization noise in both passes
        runs[w] = train.train_step(m, opt, x, keep, 0.002, 0.03, 0.005, bf16=False, z_weight=w)
    torch.manual_seed(1)
    bits_z = m(x, keep)["bits_z"].detach()
    assert torch.equal(runs[1.0][1], runs[1.5][1])
    expected = 0.5 * (bits_z / (64 * 64)).mean()
    assert expected > 0
    assert (runs[1.5][0] - runs[1.0][0]).item() == pytest.approx(expected.item(), rel=0.02)  # float32 loss of ~375


def test_refinement_keep_fractions_place_half_bins_as_the_decoder():
    """keep = 1 + f: g_s gets every element, and the first ceil(f n) in coding order at the
    centre of the half of their bin the residual lies in (format.md 5.1: s -/+ 1/4), the others
    as at keep = 1; each refinement bit adds one bit to the rate."""
    m = ProgressiveModel(ModelConfig(N=8, M=12, H=8)).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    seen = []
    m.g_s.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    outs = {}
    for keep in (1.0, 1.3):
        torch.manual_seed(5)  # the same quantization noise in both passes
        with torch.no_grad():
            outs[keep] = m(x, torch.tensor([keep]))
    plain, refined = seen
    with torch.no_grad():
        y = m.g_a(x)
        z = torch.round(m.h_a(y))
        mu = m.h_mean(z)
        idx, _ = m.scale_net(z)
    n = y.numel()
    count = math.ceil(0.3 * n)
    rank = torch.empty(n, dtype=torch.int64)
    rank[element_order(idx.round().long().reshape(1, -1), tuple(y.shape[1:]), "scale",
                       m.config.levels)[0]] = torch.arange(n)
    r = (y - mu).reshape(-1)
    want = torch.where(rank < count, torch.where(r - torch.round(r) >= 0, 0.25, -0.25), 0.0)
    assert torch.allclose((refined - plain).reshape(-1), want, atol=1e-6)
    bits = {k: float(o["bits"][0] - o["bits_z"][0]) for k, o in outs.items()}
    assert bits[1.3] - bits[1.0] == pytest.approx(count, abs=1e-2)


def test_refinement_share_of_the_band():
    """--refine-max F draws the --q-one share as 1 + uniform(0, F), the rest as before."""
    ks = train.sample_band(4000, 0.04, 1.0, random.Random(4), q_one=0.2, refine_max=0.4)
    top = ks[ks > 1]
    assert abs(len(top) / 4000 - 0.2) < 0.03
    assert float(top.max()) <= 1.4 and abs(float(top.mean()) - 1.2) < 0.02
    assert float(ks[ks <= 1].max()) <= 1.0 and float(ks.min()) >= 0.04


def test_refinement_share_of_a_full_run():
    """A full run's --refine-max draws its --q-one share as 1 + uniform(0, F); the rest keeps
    sample_keep's draws, none above 1."""
    ks = train.sample_keep(4000, 0.005, random.Random(5), q_one=0.15, q_low=0.4, refine_max=0.4)
    top = ks[ks > 1]
    assert abs(len(top) / 4000 - 0.15) < 0.03
    assert float(top.max()) <= 1.4 and abs(float(top.mean()) - 1.2) < 0.02
    assert float(ks[ks <= 1].max()) < 1.0 and float(ks.min()) >= 0.005

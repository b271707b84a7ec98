"""Dequantization offsets of g_s (ModelConfig.offset_symbols): the decoder moves each received
element without a refinement bit by table[scale index, clamped symbol], only for prefixes g_s
decodes; training learns the table with g_s, and export keeps it."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container, entropy, latent_search, train
from progcodec.export import main as export_main, runtime_model_from_trained
from progcodec.model import STRIDE, ModelConfig, ProgressiveModel, coding_order
from progcodec.weights import LoadedModel, load_model, save_weights

from conftest import decode_latent, smooth_image, with_random_order_table, write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model

K = 2  # offset_symbols of these tests: symbols -2..2 have their own column


def models(tmp_path, low_keep: float = 0.5):
    """(base, with offsets): the tiny trained model with a g_s_low for prefixes below
    `low_keep`, and the same networks with a drawn offset table; the same encoder, so the
    same bitstream but for the header's model name and digest."""
    trained = tiny_trained_model()
    config = dataclasses.replace(TINY, low_synthesis_keep=low_keep)
    out = []
    for k in (0, K):
        m = ProgressiveModel(dataclasses.replace(config, offset_symbols=k))
        missing, unexpected = m.load_state_dict(trained.state_dict(), strict=False)
        assert not unexpected and set(missing) <= {"g_s_offset"} | {
            n for n in m.state_dict() if n.startswith("g_s_low.")}
        m.g_s_low.load_state_dict(m.g_s.state_dict())
        if k:
            with torch.no_grad():  # distinct in every row and column, never 0: a wrong index shows
                rows = torch.arange(TINY.levels, dtype=torch.float32)[:, None]
                cols = torch.arange(2 * K + 1, dtype=torch.float32)[None, :]
                m.g_s_offset.copy_(0.003 * rows + 0.05 * (cols - K) + 0.0105)
        path = tmp_path / f"offsets{k}.safetensors"
        save_weights(runtime_model_from_trained(m), f"tiny-offsets{k}", path)
        out.append(load_model(path))
    return out


def hyper_of(data: bytes, loaded: LoadedModel):
    """The decoder's means (float32, as in its latent) and scale indexes of a file."""
    rt = codec.runtime(loaded, "cpu")
    h = container.parse_header(data)
    p = container.parse(data, rt.z_channels, rt.y_channels)
    z = entropy.decode_z(p.z_bytes, (rt.z_channels, -(-h.height // STRIDE), -(-h.width // STRIDE)),
                         rt.models)
    mu, idx = rt.hyper(torch.from_numpy(z)[None])
    return mu.float(), idx


def test_config_rejects_bad_symbol_counts():
    for bad in (-1, 9):
        with pytest.raises(ValueError):
            ModelConfig(offset_symbols=bad)


def test_offsets_move_received_elements_by_their_table_entry(tmp_path):
    base, moved = models(tmp_path)
    img = smooth_image(128, 192, seed=7)
    data_b = progcodec.encode(img, model=base, device="cpu")
    data_o = progcodec.encode(img, model=moved, device="cpu")
    assert data_b[container.parse_header(data_b).min_length:] == \
        data_o[container.parse_header(data_o).min_length:]  # same symbols
    mu, idx = hyper_of(data_b, base)
    table = moved.model.g_s_offset.detach()
    n = idx.numel()

    lat_b, lat_o = decode_latent(data_b, base), decode_latent(data_o, moved)
    assert lat_b.decoded == n and lat_b.refined == 0
    y_b, y_o = lat_b.y_hat.reshape(-1), lat_o.y_hat.reshape(-1)
    sym = torch.round(y_b - mu)
    assert sym.abs().max() > K  # the clamp is exercised
    expected = table[idx, sym.clamp(-K, K).long() + K]
    assert torch.allclose(y_o - y_b, expected, atol=1e-5)

    # a prefix g_s decodes: only the received elements move
    h = container.parse_header(data_o)
    cut = h.min_length + (len(data_o) - h.min_length) * 3 // 4
    part_b, part_o = decode_latent(data_b[:cut], base), decode_latent(data_o[:cut], moved)
    assert 0.5 * n <= part_o.decoded < n
    received = torch.zeros(n, dtype=torch.bool)
    received[coding_order(idx, TINY.levels, None)[:part_o.decoded]] = True
    diff = part_o.y_hat.reshape(-1) - part_b.y_hat.reshape(-1)
    assert torch.allclose(diff[received], expected[received], atol=1e-5)
    assert torch.equal(diff[~received], torch.zeros_like(diff[~received]))

    # a prefix g_s_low decodes: nothing moves
    short = h.min_length + (len(data_o) - h.min_length) // 10
    low_b, low_o = decode_latent(data_b[:short], base), decode_latent(data_o[:short], moved)
    assert 0 < low_o.decoded < 0.5 * n
    assert torch.equal(low_o.y_hat, low_b.y_hat)


def test_refined_elements_keep_their_half_bin(tmp_path):
    base, moved = models(tmp_path)
    base, moved = with_random_order_table(base, 3), with_random_order_table(moved, 3)
    moved = LoadedModel("tiny-ordered-offsets", b"ordered2", moved.model)
    img = smooth_image(128, 192, seed=8)
    lat_b = decode_latent(progcodec.encode(img, model=base, device="cpu", refine=0.3), base)
    data_o = progcodec.encode(img, model=moved, device="cpu", refine=0.3)
    lat_o = decode_latent(data_o, moved)
    assert lat_o.refined > 0
    mu, idx = hyper_of(data_o, moved)
    order = coding_order(idx, TINY.levels, moved.model.tables.order_rank)
    diff = (lat_o.y_hat - lat_b.y_hat).reshape(-1)
    assert torch.equal(diff[order[:lat_o.refined]], torch.zeros(lat_o.refined))
    assert (diff[order[lat_o.refined:]] != 0).all()


def test_a_g_s_stage_learns_the_table_and_export_keeps_it(tmp_path):
    """--init from weights without offsets plus --config offset_symbols: the table starts at
    zero, a --synthesis-keep-min stage trains it with g_s (not g_s_low), export keeps it."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--config", json.dumps({"offset_symbols": K, "low_synthesis_keep": 0.2}),
              "--side-lr-mult", "10"]
    assert train.main(common + ["--out", str(tmp_path / "run0"), "--steps", "0"]) == 0
    start = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=False)["model"]
    assert start["g_s_offset"].shape == (TINY.levels, 2 * K + 1)
    assert start["g_s_offset"].abs().max() == 0
    assert train.main(common + ["--out", str(tmp_path / "run"), "--steps", "3",
                                "--synthesis-keep-min", "0.2"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["model"]["g_s_offset"].abs().max() > 0
    assert torch.equal(ckpt["model"]["g_s_low.0.weight"], start["g_s_low.0.weight"])

    out = tmp_path / "exported.safetensors"
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), str(out), "--name", "tiny-off"]) == 0
    loaded = load_model(out)
    assert loaded.model.config.offset_symbols == K
    assert torch.equal(loaded.model.g_s_offset.detach(),  # weight files store floats as fp16
                       ckpt["model"]["g_s_offset"].half().float())


def test_the_search_scores_the_offsets_the_decoder_adds(tmp_path):
    """latent_search.with_offsets: a hard symbol moves by its table entry, as in the decoder;
    a soft one by the entry of its nearest integer, with the gradient of the symbol alone.
    And both searches run with a model that has a table."""
    table = torch.arange(TINY.levels * (2 * K + 1), dtype=torch.float64).view(TINY.levels, -1) / 1000
    idx = torch.tensor([[0, 5], [63, 9]])
    sym = torch.tensor([[-3.0, 1.0], [0.2, 2.6]], requires_grad=True)
    out = latent_search.with_offsets(sym, (table, idx))
    expected = sym.detach() + torch.tensor([[table[0, 0], table[5, 3]], [table[63, 2], table[9, 4]]]).float()
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert torch.equal(sym.grad, torch.ones_like(sym))
    assert latent_search.with_offsets(sym, None) is sym

    _, moved = models(tmp_path)
    img = smooth_image(64, 128, seed=9)
    for search_z in (False, True):
        data = progcodec.encode(img, model=moved, device="cpu", search=2, search_z=search_z)
        assert np.asarray(progcodec.decode(data, model=moved, device="cpu")).shape == (64, 128, 3)

"""The coding order's priority table: its ranks, its measurement, and its storage."""
import numpy as np
import torch

from progcodec import ordering
from progcodec.model import ModelConfig, coding_order
from progcodec.tables import CodingTables, gaussian_pmf, quantize_pmf


def _y_counts(sigmas):
    radius = max(2, int(np.ceil(10 * max(sigmas))))
    rows = np.zeros((len(sigmas), 2 * radius + 1), np.int64)
    for i, s in enumerate(sigmas):
        r = max(2, int(np.ceil(10 * s)))
        rows[i, radius - r:radius + r + 1] = quantize_pmf(gaussian_pmf(s, r))
    return rows


def test_level_values_grow_with_sigma():
    """Quality per bit of sending an element rises with its scale (why plain scale order is a
    sensible default), and a near-certain symbol is worth almost nothing."""
    sigmas = ModelConfig().scale_table().numpy()[::8]
    v = ordering.level_values(sigmas, _y_counts(sigmas))
    assert np.all(np.diff(v) > 0), v
    assert v[0] < 0.05 * v[-1]


def test_order_rank_is_a_permutation_by_priority():
    gains = np.array([1.0, 3.0, 0.5])
    values = np.array([0.1, 1.0, 2.0, 2.0])
    rank = ordering.order_rank(gains, values)
    assert rank.dtype == np.int32 and sorted(rank.ravel()) == list(range(12))
    # priorities 6 6 3 | 2 2 | 1 (ch0) 1 1 (ch2) | ...; ties: channel ascending, level descending
    assert [rank[1, 3], rank[1, 2], rank[1, 1], rank[0, 3], rank[0, 2]] == [0, 1, 2, 3, 4]
    assert [rank[0, 1], rank[2, 3], rank[2, 2], rank[2, 1]] == [5, 6, 7, 8]
    assert [rank[1, 0], rank[0, 0], rank[2, 0]] == [9, 10, 11]
    # equal gains give plain scale order's level sequence (values increase with level)
    flat = ordering.order_rank(np.ones(3), np.array([0.1, 0.5, 1.0, 2.0]))
    idx = torch.tensor([0, 3, 1, 2, 3, 0])  # 3 channels x 2 positions
    levels = idx[coding_order(idx, 4, torch.from_numpy(flat))]
    assert levels.tolist() == sorted(idx.tolist(), reverse=True)


def test_table_order_sorts_by_rank_then_position():
    rank = torch.tensor([[5, 0], [1, 4]], dtype=torch.int32)  # 2 channels x 2 levels
    idx = torch.tensor([1, 0, 1, 0, 1, 1])  # 2 channels x 3 positions: ch0 = [1,0,1], ch1 = [0,1,1]
    order = coding_order(idx, 2, rank).tolist()
    # keys: ch0 level1 -> 0, ch1 level0 -> 1, ch1 level1 -> 4, ch0 level0 -> 5
    assert order == [0, 2, 3, 4, 5, 1]


def test_channel_gains_see_the_synthesis():
    """A synthesis that ignores channel 1 and doubles channel 0 gives gains in ratio 4 : 0 : 1."""
    g_a = torch.nn.Conv2d(3, 3, 16, stride=16, bias=False)
    g_s = torch.nn.ConvTranspose2d(3, 1, 1, bias=False)
    with torch.no_grad():
        g_s.weight.copy_(torch.tensor([2.0, 0.0, 1.0]).view(3, 1, 1, 1))
    crop = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    g = ordering.channel_gains(g_a, g_s, [crop])
    assert np.allclose(g / g[2], [4.0, 0.0, 1.0])


def test_order_table_is_stored_and_loaded(tmp_path, tiny):
    import copy
    from progcodec.weights import load_model, save_weights
    m = copy.deepcopy(tiny.model)
    c = m.config
    rank = torch.arange(c.M * c.levels, dtype=torch.int32).flip(0).reshape(c.M, c.levels)
    m.tables.register_buffer("order_rank", rank)
    save_weights(m, "t", tmp_path / "t.safetensors")
    assert torch.equal(load_model(tmp_path / "t.safetensors").model.tables.order_rank, rank)
    assert tiny.model.tables.order_rank is None
    assert "tables.order_rank" not in tiny.model.state_dict()
    assert isinstance(m.tables, CodingTables)

"""Fitting a weight file's y tables to its encoder's symbols (progcodec.fit_tables)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progcodec import codec, fit_tables, weights
from progcodec.tables import TABLE_TOTAL

from conftest import DATA, smooth_image, with_random_order_table


def test_fitted_rows_are_valid_tables_shaped_by_the_histogram():
    radius = torch.tensor([2, 3], dtype=torch.int32)
    counts = torch.zeros(2, 7, dtype=torch.int32)
    counts[0, :5] = torch.tensor([1, 1000, TABLE_TOTAL - 2003, 1000, 1])
    counts[1, :7] = torch.tensor([1, 10, 1000, TABLE_TOTAL - 2022, 1000, 10, 1])
    hist = np.zeros((2, 7), dtype=np.int64)
    hist[0, :5] = [0, 0, 10, 30, 0]  # level 0: symbol +1 is three times as common as 0
    out = fit_tables.fitted_y_counts(counts, radius, hist, prior=10.0)
    for level, width in ((0, 5), (1, 7)):
        row = out[level, :width]
        assert int(row.sum()) == TABLE_TOTAL and int(row.min()) >= 1
        assert (out[level, width:] == 0).all()
    p = out[0, :5].double() / TABLE_TOTAL
    # histogram (10, 30 at symbols 0, +1) plus 10 pseudo-counts, nearly all at 0: 20 / 50, 30 / 50
    assert abs(p[2] - 0.4) < 1e-3 and abs(p[3] - 0.6) < 1e-3
    # a level without symbols keeps its table (up to the quantization)
    assert (out[1, :7] - counts[1, :7]).abs().max() <= 8


def test_fitted_model_codes_its_photos_in_fewer_bytes_and_decodes_them(tmp_path):
    """On the photos it was fitted on, the tiny model's files shrink; the fitted weight file
    loads and differs from the original in its y tables alone; the tables change the bytes,
    not the symbols, so a fitted file decodes to exactly the original model's image."""
    src = DATA / "tiny.safetensors"
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [smooth_image(48, 64, seed=s) for s in range(4)]
    for i, img in enumerate(images):  # the first, by name, is the validation split's: unused
        Image.fromarray(img).save(photos / f"p{i}.png")
    out = tmp_path / "fitted.safetensors"
    assert fit_tables.main([str(src), str(out), "--name", "tiny-fitted",
                            "--images", str(photos), "--count", "3", "--prior", "1"]) == 0
    fitted = weights.load_model(out)
    original = weights.load_weights_bytes(src.read_bytes(), src)
    assert fitted.name == "tiny-fitted"
    old_state, new_state = original.model.state_dict(), fitted.model.state_dict()
    assert old_state.keys() == new_state.keys()
    changed = [k for k in old_state if not torch.equal(old_state[k], new_state[k])]
    assert changed == ["tables.y_counts"]
    old_size = sum(len(codec.encode(img, model=original, device="cpu")) for img in images[1:])
    new_size = sum(len(codec.encode(img, model=fitted, device="cpu")) for img in images[1:])
    assert new_size < old_size, (new_size, old_size)
    for img in images[1:]:
        new = codec.decode(codec.encode(img, model=fitted, device="cpu"), model=fitted, device="cpu")
        old = codec.decode(codec.encode(img, model=original, device="cpu"), model=original,
                           device="cpu")
        assert np.array_equal(np.asarray(new), np.asarray(old))


def test_tables_copy_to_a_model_with_the_same_encoder_only(tmp_path):
    """--from gives a model whose syntheses alone changed the fitted tables of the model it
    started from; a model whose encoder side changed is refused, naming the tensor."""
    src = DATA / "tiny.safetensors"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(photos / f"p{i}.png")
    fitted_path = tmp_path / "fitted.safetensors"
    assert fit_tables.main([str(src), str(fitted_path), "--name", "tiny-fitted",
                            "--images", str(photos), "--count", "2", "--prior", "1"]) == 0
    fitted = weights.load_model(fitted_path)

    def variant(part: str) -> Path:  # the tiny model with one network nudged
        loaded = weights.load_weights_bytes(src.read_bytes(), src)
        with torch.no_grad():
            next(getattr(loaded.model, part).parameters()).add_(0.01)
        path = tmp_path / f"{part}.safetensors"
        weights.save_weights(loaded.model, f"tiny-{part}", path)
        return path

    out = tmp_path / "copied.safetensors"
    assert fit_tables.main([str(variant("g_s")), str(out), "--name", "tiny-copied",
                            "--from", str(fitted_path)]) == 0
    copied = weights.load_model(out)
    assert torch.equal(copied.model.tables.y_counts, fitted.model.tables.y_counts)
    assert not torch.equal(copied.model.tables.y_counts,
                           weights.load_weights_bytes(src.read_bytes()).model.tables.y_counts)
    with pytest.raises(SystemExit, match="h_mean"):
        fit_tables.main([str(variant("h_mean")), str(tmp_path / "refused.safetensors"),
                         "--name", "tiny-refused", "--from", str(fitted_path)])


def test_refinement_table_is_fitted_copied_and_refused_where_it_cannot_apply(tmp_path):
    """--refine-table on top of copied y tables: the model writes version 5, its files are
    smaller on the photos it was fitted on and decode to the same image as the version 4
    model's; --from copies the table on; the options that cannot go together are refused."""
    ordered = with_random_order_table(weights.load_model(DATA / "tiny.safetensors"), seed=2)
    src = tmp_path / "ordered.safetensors"
    weights.save_weights(ordered.model, "tiny-ordered", src)
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [smooth_image(64, 96, seed=s) for s in range(4)]
    for i, img in enumerate(images):  # p0 is the validation split's: unused
        Image.fromarray(img).save(photos / f"p{i}.png")
    fitted, tabled, copied = (tmp_path / f"{n}.safetensors" for n in ("fitted", "tabled", "copied"))
    common = ["--images", str(photos), "--count", "3", "--prior", "1"]
    assert fit_tables.main([str(src), str(fitted), "--name", "tiny-fitted", *common]) == 0
    assert fit_tables.main([str(src), str(tabled), "--name", "tiny-tabled", "--from", str(fitted),
                            "--refine-table", *common]) == 0
    assert fit_tables.main([str(src), str(copied), "--name", "tiny-copied", "--from", str(tabled)]) == 0
    v4, v5, again = (weights.load_model(p) for p in (fitted, tabled, copied))
    assert v4.model.tables.refine_counts is None
    table = v5.model.tables.refine_counts
    assert table is not None and torch.equal(table, again.model.tables.refine_counts)
    assert (table.sum(-1) == TABLE_TOTAL).all() and int(table.min()) >= 1
    assert torch.equal(v5.model.tables.y_counts, v4.model.tables.y_counts)
    files4 = [codec.encode(img, model=v4, device="cpu") for img in images[1:]]
    files5 = [codec.encode(img, model=v5, device="cpu") for img in images[1:]]
    assert {f[4] for f in files4} == {4} and {f[4] for f in files5} == {5}
    assert sum(map(len, files5)) < sum(map(len, files4)), (list(map(len, files5)), list(map(len, files4)))
    for a, b in zip(files4, files5):
        assert np.array_equal(np.asarray(codec.decode(a, model=v4, device="cpu")),
                              np.asarray(codec.decode(b, model=v5, device="cpu")))
    for bad in (["--from", str(fitted), *common],  # --images with --from fits the table only
                ["--refine-table", "--from", str(fitted)]):  # nothing to fit it on
        with pytest.raises(SystemExit) as e:
            fit_tables.main([str(src), str(tmp_path / "bad.safetensors"), "--name", "x", *bad])
        assert e.value.code == 2
    with pytest.raises(SystemExit, match="no order table"):
        fit_tables.main([str(DATA / "tiny.safetensors"), str(tmp_path / "bad.safetensors"),
                         "--name", "x", "--refine-table", *common])

"""The ordering ablation's measurement: ideal rates match the real coder, and orders differ only
in which elements a prefix holds."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import progcodec
from progcodec import ablation, container


def test_whole_latent_is_the_same_point_under_every_order(photo):
    """The shipped model on a real crop: every order ends at the same point (all elements),
    whose ideal bpp is within 1% of the real file's, and prefixes rise in bpp."""
    loaded = ablation.load_any("progcodec-v1")
    data = progcodec.encode(photo, model=loaded)
    real_bpp = 8 * len(data) / (photo.shape[0] * photo.shape[1])
    ends = []
    for kind in ("scale", "channel", "raster"):
        pts = ablation.measure_image(photo, loaded, kind, targets=(0.3, 0.6, 1.0))
        assert [p["bpp"] for p in pts] == sorted(p["bpp"] for p in pts)
        assert pts[-1]["whole"] and not any(p["whole"] for p in pts[:-1])
        ends.append((round(pts[-1]["bpp"], 9), round(pts[-1]["psnr"], 9)))
        assert abs(pts[-1]["bpp"] - real_bpp) < 0.01 * real_bpp
    assert len(set(ends)) == 1
    full = progcodec.decode(data, model=loaded)
    assert abs(progcodec.codec.psnr(np.asarray(full), photo) - ends[0][1]) < 0.05
    assert container.parse_header(data).width == photo.shape[1]


def test_against_curve_reaverages_eval_files_over_the_same_images(tmp_path):
    """--against with an eval-written file compares like with like: the reference is re-averaged
    over exactly the measured images (a setting counts only when all of them have it); a file
    without per-image points is used whole."""
    from progcodec.evaluate import load_curve_json
    per_image = [
        {"file": "a.png", "points": [{"setting": "s1", "bpp": 0.1, "psnr": 20.0},
                                     {"setting": "s2", "bpp": 0.2, "psnr": 24.0}]},
        {"file": "b.png", "points": [{"setting": "s1", "bpp": 0.3, "psnr": 30.0}]},
    ]
    f = tmp_path / "ref.json"
    f.write_text(json.dumps({"name": "ref", "results": {"bpp": [0.2, 0.9], "psnr-rgb": [25.0, 33.0]},
                             "per_image": per_image}))
    curve = load_curve_json(f)
    name, (bpp, psnr) = ablation.against_curve(curve, ["a.png", "b.png"])
    assert (bpp, psnr) == ((0.2,), (25.0,)) and "same 2 images" in name
    _, (bpp, psnr) = ablation.against_curve(curve, ["a.png"])
    assert (bpp, psnr) == ((0.1, 0.2), (20.0, 24.0))
    name, (bpp, psnr) = ablation.against_curve(curve, ["c.png"])      # not in the file: whole
    assert (bpp, psnr) == ((0.2, 0.9), (25.0, 33.0)) and name == "ref"


def test_reuse_puts_earlier_runs_in_one_table_and_checks_their_images(tmp_path, capsys):
    """--reuse joins the curves of earlier --json files without measuring: the first reused
    curve is the BD reference, a file of other images or a repeated label is refused."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    ref = [[0.1, 20.0], [0.2, 23.0], [0.4, 26.0], [0.8, 29.0]]
    cheaper = [[b / 2, p] for b, p in ref]  # the same quality at half the rate: BD-rate -50%
    j1, j2 = tmp_path / "one.json", tmp_path / "two.json"
    j1.write_text(json.dumps({"images": 2, "files": ["a.png", "b.png"], "curves": {"scale (x)": ref}}))
    j2.write_text(json.dumps({"images": 2, "curves": {"channel (y)": cheaper}}))  # older: no names
    out = tmp_path / "both.json"
    assert ablation.main([str(folder), "--reuse", str(j1), "--reuse", str(j2), "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["reference"] == "scale (x)" and saved["files"] == ["a.png", "b.png"]
    assert abs(saved["bd_rate_percent"]["channel (y)"] + 50.0) < 1e-6
    assert "channel (y): -50.0%" in capsys.readouterr().out

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": 2, "files": ["a.png", "c.png"], "curves": {"z": ref}}))
    for bad in ([str(other)], [str(j1), str(j1)], [str(folder / "a.png")]):
        with pytest.raises(SystemExit) as e:
            ablation.main([str(folder)] + [a for f in bad for a in ("--reuse", f)])
        assert e.value.code == 2


def test_checkpoint_labels_keep_a_runs_snapshots_apart():
    assert ablation.checkpoint_label(Path("runs/abl-scale/checkpoint.pt")) == "abl-scale"
    assert ablation.checkpoint_label(Path("runs/abl-scale/step004000.pt")) == "abl-scale@4000"
    assert ablation.checkpoint_label(Path("runs/abl-scale/stepx.pt")) == "abl-scale"

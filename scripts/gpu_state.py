"""Move a training checkpoint's model back from a GPU burst: the device tool returns files of at
most 16 MiB, and the fp32 model alone is about 24 MB (the optimizer state stays behind).

    python scripts/gpu_state.py split /tmp/g/checkpoint.pt $OUT      # on the GPU machine
    python scripts/gpu_state.py join FOLDER runs/g1/checkpoint.pt    # here; then --init or export
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SHARD_BYTES = 14 * 2**20


def split(ckpt: Path, out: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    shards, size = [{}], 0
    for k, v in state["model"].items():
        n = v.numel() * v.element_size()
        if size + n > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][k] = v.detach().contiguous().cpu()
        size += n
    out.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        save_file(shard, out / f"model-{i}.safetensors")
    (out / "meta.json").write_text(json.dumps(
        {"config": state["config"], "step": state["step"], "args": state.get("args", {})}))
    print(f"step {state['step']}: {len(shards)} shards in {out}")


def join(folder: Path, ckpt: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    model = {}
    for f in sorted(folder.glob("model-*.safetensors")):
        model.update(load_file(f))
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "config": meta["config"], "step": meta["step"],
                "args": meta["args"]}, ckpt)
    print(f"step {meta['step']}: {len(model)} tensors -> {ckpt}")


if __name__ == "__main__":
    {"split": split, "join": join}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))

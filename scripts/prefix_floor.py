"""Mean smallest decodable prefix (header + z stream, bytes) of the files of `progcodec eval`
runs, read from their results.json (per_image min_bytes), for docs/latent-search.md.

    python scripts/prefix_floor.py runs/eval-kodak-v15c/results.json runs/eval-kodak-v14-s10w2/results.json
"""
import json
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        images = json.load(f)["per_image"]
    mean = sum(im["min_bytes"] for im in images) / len(images)
    print(f"{path}: {mean:.0f} bytes (mean of {len(images)} images)")

"""Median decode seconds per image at every cut of `progcodec eval` runs, read from their
results.json (per_image points' decoding_time), and the slowest single decode: the issue's
decode bound holds at any quality, not only for the whole file that results.md times.

    python scripts/decode_times.py runs/eval-kodak-v21-re32/results.json runs/eval-kodak-l1-k4/results.json
"""
import json
import statistics
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        images = json.load(f)["per_image"]
    times: dict[str, list[float]] = {}
    for im in images:
        for p in im["points"]:
            times.setdefault(p["setting"], []).append(p["decoding_time"])
    cells = ", ".join(f"{s} {statistics.median(t):.3f} s" for s, t in times.items())
    slowest = max(max(t) for t in times.values())
    print(f"{path}: median decode per image: {cells}; slowest single decode {slowest:.3f} s")

"""Fuzz the decoder with hostile .pic files, in process.

    python -m progcodec.fuzz --count 100000 --seed 0
    python -m progcodec.fuzz --seed 0 --index 1234      # replay one input, with its traceback

A few valid files (small images encoded with the tiny test model and two shipped models) are
mutated: bit flips, byte changes, cuts, insertions, deletions, appended junk, swapped block-sized
chunks, extreme header values (with the header CRC recomputed, so the bounds are what is tested),
and damage to the z stream or a y block with its CRC recomputed (so the range decoder sees it).
Every decode must return an image of the header's size or raise the codec's clean error
(FormatError or CodecError, with a one-line printable message: what the CLI prints). Anything
else, a message with a newline or control character, an input taking more than --max-seconds,
or a peak RSS more than --max-rss-mb over the RSS before the first input is a failure, reported
with the index that replays it (input i is a function of (seed, i) only). Exit status 1 if any
failure.
"""
from __future__ import annotations

import argparse
import collections
import re
import resource
import signal
import struct
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import torch

from . import codec, container
from .codec import CodecError
from .container import FormatError
from .weights import DEFAULT_MODEL, load_model

TINY = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny.safetensors"
# The last default model that writes format version 4, fuzzed beside the default (version 5):
# its files, and one under a version 3 header, keep the older layouts covered.
VERSION_4_MODEL = "progcodec-v29"
EXTREMES = (0, 1, 2, 3, 4, 15, 16, 17, 63, 64, 65, 255, 256, 1023, 1024, 4096, 65535, 65536,
            (1 << 24) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)
CLEAN = (FormatError, CodecError)


class Timeout(Exception):
    pass


def structured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic image with structure (gradients, a disc, noise), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    g = 255 * xx / max(1, w - 1)
    b = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2, 220.0, 40.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def legacy_header(data: bytes, name: str) -> bytes:
    """A version 4 file under the header layout that files written before version 4 have
    (version 3, or 2 without refinement symbols; format.md 2): same z and y streams."""
    h = container.parse_header(data)
    old = container.Header(name, h.model_digest, h.width, h.height, h.z_len, h.y_len, h.y_block,
                           container.VERSION_REFINED if h.refined else container.VERSION_ORDER_TABLE,
                           h.refined)
    return old.pack() + data[h.size:]


def seed_files(models: list[str]) -> list[tuple[str, object, bytes]]:
    """(label, loaded model, valid .pic bytes). Small models get a multi-block file too (256-byte
    y blocks); a model that writes version 4 also gets its first file under a version 3 header."""
    out = []
    for m in models:
        loaded = load_model(m)
        sizes = [(48, 64), (17, 33)] + ([(320, 448)] if loaded.model.config.M <= 32 else [])
        for h, w in sizes:
            data = codec.encode(structured_image(h, w, seed=h), model=loaded, device="cpu",
                                y_block=256 if h == 320 else container.Y_BLOCK)
            out.append((f"{loaded.name}:{w}x{h}", loaded, data))
        first = out[-len(sizes)][2]
        if first[4] == container.VERSION_COMPACT:  # (version 5 has no older layout)
            out.append((f"{loaded.name}:{sizes[0][1]}x{sizes[0][0]}:version 3", loaded,
                        legacy_header(first, loaded.name)))
    return out


# ---- mutations ------------------------------------------------------------------------------
def _layout(data: bytes) -> tuple[dict[str, tuple[int, int]], int] | None:
    """The header's fields {name: (offset, size)} and its size, as its version byte (and name
    length byte, before version 4) claim, when those are plausible."""
    if len(data) < 5 or data[4] not in container.VERSIONS:
        return None
    if data[4] in container.COMPACT_VERSIONS:
        return container.field_layout(data[4])
    if len(data) < 7 or not 1 <= data[6] <= container.MAX_NAME:
        return None
    return container.field_layout(data[4], data[6])


def _set_field(d: bytearray, where: tuple[int, int], value: int) -> None:
    """Write value into a header field, keeping as many low bytes as the field has."""
    off, size = where
    d[off:off + size] = (value % (1 << 8 * size)).to_bytes(size, "big")


def _get_field(d: bytes, where: tuple[int, int]) -> int:
    return int.from_bytes(d[where[0]:where[0] + where[1]], "big")


def _recrc_header(d: bytearray) -> None:
    f = _layout(d)
    if f and len(d) >= f[1]:
        struct.pack_into(">I", d, f[1] - 4, zlib.crc32(bytes(d[:f[1] - 4])))


def _blocks(d: bytes) -> list[tuple[int, int]]:
    """(start, length) of the z stream and each y block present, from the header as it is."""
    try:
        h = container.parse_header(bytes(d))
    except FormatError:
        return []
    if h.min_length > len(d):
        return []
    out, pos, left = [(h.size, h.z_len)], h.min_length, h.y_len
    while left > 0 and pos + min(h.y_block, left) + 4 <= len(d):
        n = min(h.y_block, left)
        out.append((pos, n))
        pos, left = pos + n + 4, left - n
    return out


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """1 to 3 random mutations; returns the bytes and their names."""
    d = bytearray(data)
    names = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["bitflip", "byte", "cut", "insert", "delete", "append", "swap",
                               "header", "header", "stream", "stream", "stream"]))
        names.append(kind)
        n = len(d)
        # half the positioned mutations land in the first 64 bytes (the header)
        pos = int(rng.integers(0, max(1, min(n, 64)) if rng.random() < 0.5 else max(1, n)))
        if kind == "bitflip" and n:
            d[pos % n] ^= 1 << int(rng.integers(0, 8))
        elif kind == "byte" and n:
            d[pos % n] = int(rng.integers(0, 256))
        elif kind == "cut":
            del d[int(rng.integers(0, n + 1)):]
        elif kind == "insert":
            d[pos:pos] = rng.bytes(int(rng.integers(1, 17)))
        elif kind == "delete":
            del d[pos:pos + int(rng.integers(1, 17))]
        elif kind == "append":
            d += rng.bytes(int(rng.integers(1, 3000)))
        elif kind == "swap" and n >= 8:
            size = container.Y_BLOCK + 4 if rng.random() < 0.5 else int(rng.integers(1, max(2, n // 2)))
            size = min(size, n // 2)
            a = int(rng.integers(0, n - 2 * size + 1))
            b = int(rng.integers(a + size, n - size + 1))
            d[a:a + size], d[b:b + size] = d[b:b + size], d[a:a + size]
        elif kind == "header":
            f = _layout(d)
            if f is None or len(d) < f[1]:
                continue
            fields, size_field = f[0], "y_block" if "y_block" in f[0] else "y_block_log2"
            field = int(rng.integers(0, 9))
            value = int(rng.choice(EXTREMES)) if rng.random() < 0.8 else int(rng.integers(0, 1 << 32))
            if field < 4:  # width, height, z_len, y_len
                _set_field(d, fields[("width", "height", "z_len", "y_len")[field]], value)
            elif field == 4:
                _set_field(d, fields[size_field], value)
            elif field == 5:  # version, flags (the first digest byte in version 4)
                d[4 + int(rng.integers(0, 2))] = value & 0xFF
            elif field == 6:  # a small change of the size: same latent or one more tile
                where = fields[("width", "height")[int(rng.integers(0, 2))]]
                _set_field(d, where, max(0, _get_field(d, where) + int(rng.integers(-70, 71))))
            elif field == 8:  # versions 3 and 4: the refinement count, extreme or a small change
                if "refined" not in fields:
                    continue
                v = _get_field(d, fields["refined"])
                v = value if rng.random() < 0.5 else max(0, v + int(rng.integers(-9, 10)))
                _set_field(d, fields["refined"], v)
            else:  # a legitimate-looking length change
                where = fields[("z_len", "y_len")[int(rng.integers(0, 2))]]
                _set_field(d, where, max(0, _get_field(d, where) + 4 * int(rng.integers(-8, 9))))
            if rng.random() < 0.9:
                _recrc_header(d)
        elif kind == "stream":  # damage inside z or a y block, then fix its CRC
            blocks = _blocks(d)
            if not blocks:
                continue
            start, length = blocks[int(rng.integers(0, len(blocks)))]
            if length == 0:
                continue
            for _ in range(int(rng.integers(1, 4))):
                i = start + int(rng.integers(0, length))
                d[i] = int(rng.integers(0, 256)) if rng.random() < 0.5 else d[i] ^ (1 << int(rng.integers(0, 8)))
            struct.pack_into(">I", d, start + length, zlib.crc32(bytes(d[start:start + length])))
    return bytes(d), names


# ---- running --------------------------------------------------------------------------------
def kind_of(message: str) -> str:
    """A message with its numbers and names blanked: the outcome's kind."""
    k = re.sub(r"\S+ \([0-9a-f]{16}\)", "X", message.splitlines()[0] if message else "")
    k = re.sub(r"digest [0-9a-f]{16}", "digest X", k)
    k = re.sub(r"flags 0x[0-9a-f]+", "flags N", k)
    k = re.sub(r"\d+", "N", k)
    return k[:90]


def input_for(seed: int, index: int, seeds: list) -> tuple[str, object, bytes, bool, list[str]]:
    rng = np.random.default_rng([seed, index])
    label, loaded, data = seeds[int(rng.integers(0, len(seeds)))]
    mutated, names = mutate(data, rng)
    return label, loaded, mutated, bool(rng.random() < 0.2), names


def check_one(data: bytes, loaded, strict: bool, max_seconds: float) -> tuple[str, str | None]:
    """('decoded' | 'error: <kind>', None) or ('FAIL', description)."""
    def alarm(signum, frame):
        raise Timeout(f"more than {max_seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max_seconds)
    t0 = time.perf_counter()
    try:
        d = codec.decode_detailed(data, model=loaded, device="cpu", strict=strict)
        h = container.parse_header(data)
        if d.image.size != (h.width, h.height):
            return "FAIL", f"decoded {d.image.size}, header says {h.width}x{h.height}"
        if not 0 <= d.elements_decoded <= d.elements_total:
            return "FAIL", f"elements decoded {d.elements_decoded} of {d.elements_total}"
        outcome = "decoded"
        codec.truncate(data, nbytes=len(data))  # the model-free path too
    except CLEAN as e:
        if not str(e).isprintable():  # the CLI prints it as one line on a terminal
            return "FAIL", f"error message is not one printable line: {str(e)!r}"[:300]
        outcome = f"error: {kind_of(str(e))}"
    except Timeout as e:
        return "FAIL", f"hang: {e}"
    except Exception as e:  # anything else is a bug
        return "FAIL", f"{type(e).__name__}: {e}".splitlines()[0][:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    if seconds > max_seconds:
        return "FAIL", f"took {seconds:.1f} s"
    return outcome, None


def _proc_status_mb(field: str) -> float | None:
    """A memory figure of /proc/self/status (VmRSS, VmHWM) in MB; None where Linux has none."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"{field}:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def reset_peak_rss() -> float:
    """Start peak_rss_mb afresh where Linux allows it (writing 5 to /proc/self/clear_refs resets
    the high-water mark to the current RSS) and return that current RSS in MB (0 where it cannot
    be done). The mark cannot go below it, and a process that has run other work (a test run's
    earlier tests) may hold 2 GB it no longer uses: so a limit on what the inputs cost is a limit
    on peak_rss_mb() minus this."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return 0.0
    return _proc_status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Peak resident memory in MB: since the last reset_peak_rss on Linux (VmHWM), else since
    the process started."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m progcodec.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="inputs to try")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first index (to resume)")
    ap.add_argument("--index", type=int, default=None, help="replay this one input with a traceback")
    ap.add_argument("--model", action="append", default=None,
                    help="model name or weight file (repeatable; default: the tiny test model "
                         f"when the source tree has it, the default model and {VERSION_4_MODEL})")
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--max-rss-mb", type=float, default=2048.0,
                    help="most the peak RSS may grow over the RSS before the first input")
    ap.add_argument("--save", type=Path, default=None, help="write failing inputs to this folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = a.model or ([str(TINY)] if TINY.exists() else []) + [DEFAULT_MODEL, VERSION_4_MODEL]
    seeds = seed_files(models)
    print("seed files: " + ", ".join(f"{lab} ({len(d)} B)" for lab, _, d in seeds), flush=True)

    if a.index is not None:
        label, loaded, data, strict, names = input_for(a.seed, a.index, seeds)
        print(f"input {a.index}: {label}, {len(data)} bytes, strict={strict}, mutations {names}")
        try:
            d = codec.decode_detailed(data, model=loaded, device="cpu", strict=strict)
            print("decoded", d.image.size, d.warnings)
        except CLEAN as e:
            print(f"clean error: {type(e).__name__}: {e}")
        except Exception:
            traceback.print_exc()
            return 1
        return 0

    outcomes: collections.Counter = collections.Counter()
    failures: list[tuple[int, str]] = []
    rss_failed = False
    rss_before = reset_peak_rss()
    t0 = last = time.perf_counter()
    done = 0
    try:
        for i in range(a.start, a.start + a.count):
            label, loaded, data, strict, names = input_for(a.seed, i, seeds)
            outcome, why = check_one(data, loaded, strict, a.max_seconds)
            done += 1
            if why is None and not rss_failed and peak_rss_mb() - rss_before > a.max_rss_mb:
                outcome, why, rss_failed = "FAIL", (f"peak RSS {peak_rss_mb():.0f} MB, "
                                                    f"{rss_before:.0f} MB before the inputs"), True
            outcomes["decoded" if outcome == "decoded" else "clean error" if why is None else "FAIL"] += 1
            if why is None:
                outcomes[outcome] += 1 if outcome != "decoded" else 0
            else:
                failures.append((i, f"{label} {names}: {why}"))
                print(f"FAIL --seed {a.seed} --index {i}: {label} {names}: {why}", flush=True)
                if a.save:
                    a.save.mkdir(parents=True, exist_ok=True)
                    (a.save / f"fail_s{a.seed}_i{i}.pic").write_bytes(data)
            now = time.perf_counter()
            if now - last > 60:
                last = now
                print(f"... {done} inputs, {len(failures)} failures, {done / (now - t0):.0f}/s, "
                      f"peak RSS {peak_rss_mb():.0f} MB", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    elapsed = time.perf_counter() - t0
    print(f"\ninputs tried: {done} (seed {a.seed}, indexes {a.start}..{a.start + done - 1})")
    print(f"failures: {len(failures)}")
    print(f"decoded: {outcomes['decoded']}   clean errors: {outcomes['clean error']}")
    for k, v in sorted(((k, v) for k, v in outcomes.items() if k.startswith("error: ")),
                       key=lambda kv: -kv[1]):
        print(f"  {v:8d}  {k[7:]}")
    print(f"time {elapsed:.1f} s, {done / max(elapsed, 1e-9):.1f} inputs/s, "
          f"peak RSS {peak_rss_mb():.0f} MB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

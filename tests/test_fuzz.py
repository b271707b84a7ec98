"""Hostile .pic files: every decode returns an image of the header's size or a clean error.

The long run is `python -m progcodec.fuzz --count 100000 --seed 0` (progcodec/fuzz.py); this is
the same mutator, driven by hypothesis, on the tiny model and two shipped models."""
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from progcodec import codec, container, fuzz
from progcodec.container import FormatError
from progcodec.weights import DEFAULT_MODEL

from conftest import DATA
from test_cli import assert_clean_error, run

TINY = str(DATA / "tiny.safetensors")


@pytest.fixture(scope="module")
def seeds():
    """tiny: 64x48, 33x17, 448x320 (0-2); the default model: 64x48, 33x17 (version 5, 3-4);
    fuzz.VERSION_4_MODEL: 64x48, 33x17 (version 4) and the 64x48 file under a version 3 header
    (5-7)"""
    return fuzz.seed_files([TINY, DEFAULT_MODEL, fuzz.VERSION_4_MODEL])


FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(which=st.integers(0, 7), seed=st.integers(0, 2**64 - 1))
def test_mutated_files_decode_or_fail_cleanly(seeds, which, seed):
    label, loaded, data = seeds[which % len(seeds)]
    mutated, names = fuzz.mutate(data, np.random.default_rng(seed))
    outcome, why = fuzz.check_one(mutated, loaded, strict=seed % 5 == 0, max_seconds=10)
    assert why is None, f"{label} {names}: {why}"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_cleanly(data):
    for blob in (data, container.MAGIC + data, container.MAGIC + b"\x01\x00" + data):
        try:
            container.parse(blob)
        except FormatError:
            pass


def _with_field(data: bytes, field: str, value: int) -> bytes:
    """Set a numeric header field (its low bytes, as many as it has) and recompute the header
    CRC. "y_block" is the y block size field of any version (its logarithm in version 4)."""
    d = bytearray(data)
    fields, _ = fuzz._layout(d)
    fuzz._set_field(d, fields[field if field in fields else "y_block_log2"], value)
    fuzz._recrc_header(d)
    return bytes(d)


@pytest.mark.parametrize("field", ["width", "height", "z_len", "y_len", "y_block", "refined"])
@pytest.mark.parametrize("which, version", [(3, 5), (5, 4), (7, 3)],
                         ids=["version 5", "version 4", "version 3"])
def test_extreme_header_values_are_bounded(seeds, which, version, field):
    """0, 1, 2^16-1, 2^31-1, 2^32-1 ... with a valid header CRC: refused or decoded, nothing huge."""
    label, loaded, data = seeds[which]  # a shipped model's 64x48 file, in each header version
    assert data[4] == version
    rss_before = fuzz.reset_peak_rss()  # measure these inputs, not the tests before them
    for value in fuzz.EXTREMES:
        outcome, why = fuzz.check_one(_with_field(data, field, value), loaded, False, 10)
        assert why is None, f"{field}={value}: {why}"
    assert fuzz.peak_rss_mb() - rss_before < 2048


def test_corrupt_y_block_ends_at_the_intact_prefix(seeds, tiny):
    """A y block failing its CRC: decoded exactly as the file cut before it, with a warning;
    strict: an error."""
    data = seeds[2][2]  # tiny model, 448x320: several y blocks
    h = container.parse_header(data)
    assert h.y_len > h.y_block
    start = h.min_length + h.y_block + 4  # block 1
    bad = bytearray(data)
    bad[start + 10] ^= 0x55
    d = codec.decode_detailed(bytes(bad), model=tiny, device="cpu")
    cut = codec.decode_detailed(data[:start], model=tiny, device="cpu")
    assert d.elements_decoded == cut.elements_decoded > 0
    assert np.array_equal(np.asarray(d.image), np.asarray(cut.image))
    assert len(d.warnings) == 1 and "fails its checksum" in d.warnings[0]
    with pytest.raises(FormatError, match="fails its checksum"):
        codec.decode_detailed(bytes(bad), model=tiny, device="cpu", strict=True)


def test_hostile_files_through_the_cli(tmp_path, seeds):
    """One line on stderr, exit 1, no traceback, no output file."""
    data = seeds[0][2]
    h = container.parse_header(data)
    cases = {"width0": _with_field(data, "width", 0),
             "junk_z": data[:h.size] + b"\xff" * (len(data) - h.size)}
    for name, blob in cases.items():
        (tmp_path / f"{name}.pic").write_bytes(blob)
        r = run("decode", tmp_path / f"{name}.pic", "-o", tmp_path / f"{name}.png", "--model", TINY)
        assert_clean_error(r)
        assert not (tmp_path / f"{name}.png").exists()


def test_fuzz_command_reports_and_exits_zero(capsys):
    assert fuzz.main(["--count", "40", "--seed", "7", "--model", TINY]) == 0
    out = capsys.readouterr().out
    assert "inputs tried: 40" in out and "failures: 0" in out and "inputs/s" in out


@pytest.mark.parametrize("name", [b"tiny\ntest", b"\x1b[31mred", b"tab\there", b"caf\xe9"])
def test_model_name_must_be_printable_ascii(seeds, name):
    """Found by the fuzzer: a name from the file went into the one-line error (newline, escapes)."""
    data = seeds[0][2]
    h = container.parse_header(data)
    body = bytearray(data[:7] + name + data[7 + len(h.model_name):h.size - 4])
    body[6] = len(name)
    forged = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))) + data[h.size:]
    with pytest.raises(FormatError, match="not printable ASCII"):
        container.parse_header(forged)
    with pytest.raises(ValueError):
        container.Header(name.decode("latin-1"), h.model_digest, 1, 1, 0, 0).pack()

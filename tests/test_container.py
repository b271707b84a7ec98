"""The version 4 header, which version 5 shares (docs/format.md 2): its bytes, its round trip
and its bounds."""
import struct
import zlib

import pytest

from progcodec import container
from progcodec.container import FormatError, Header

DIGEST = bytes.fromhex("0123456789abcdef")


def test_worked_example_of_format_md():
    h = Header("unused", DIGEST, 768, 512, 2048, 40000, 4096, container.VERSION_COMPACT, 0)
    assert h.pack() == bytes.fromhex("89504743 04 0123456789abcdef 0300 0200 000800 00009c40 0c "
                                     "00000000 638b716f")
    assert (h.size, h.min_length, h.full_length) == (33, 2085, 42125)


@pytest.mark.parametrize("fields", [(1, 1, 0, 0, 256, 0), (65535, 1024, 4, 8, 65536, 7),
                                    (8192, 8192, (1 << 24) - 4, 1 << 29, 4096, 1 << 20)])
@pytest.mark.parametrize("version", container.COMPACT_VERSIONS)
def test_round_trip_at_the_edges_of_every_field(fields, version):
    w, h, z_len, y_len, y_block, refined = fields
    header = Header("unused", DIGEST, w, h, z_len, y_len, y_block, version, refined)
    data = header.pack()
    assert len(data) == 33 and data[4] == version
    back = container.parse_header(data + bytes(z_len + 4))
    assert back == Header(None, DIGEST, w, h, z_len, y_len, y_block, version, refined)


@pytest.mark.parametrize("change", [{"z_len": 1 << 24}, {"width": 65536}, {"y_block": 3072},
                                    {"y_block": 128}, {"y_block": 1 << 17}])
def test_writer_refuses_what_the_fields_cannot_hold(change):
    fields = dict(width=64, height=64, z_len=8, y_len=8, y_block=4096)
    fields.update(change)
    with pytest.raises(ValueError):
        Header("unused", DIGEST, version=container.VERSION_COMPACT, **fields).pack()


@pytest.mark.parametrize("log2", [0, 7, 17, 255])
def test_reader_refuses_a_y_block_exponent_out_of_range(log2):
    d = bytearray(Header("unused", DIGEST, 64, 64, 8, 8, 4096, container.VERSION_COMPACT).pack())
    d[24] = log2
    struct.pack_into(">I", d, 29, zlib.crc32(bytes(d[:29])))
    with pytest.raises(FormatError, match="y block size"):
        container.parse_header(bytes(d))


def test_a_cut_header_is_too_short_not_misread():
    data = Header("unused", DIGEST, 64, 64, 8, 8, 4096, container.VERSION_COMPACT).pack()
    for n in range(5, 33):
        with pytest.raises(FormatError, match="too short"):
            container.parse_header(data[:n])

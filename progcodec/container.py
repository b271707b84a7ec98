"""The .pic container (specified byte by byte in docs/format.md).

    header | z stream | CRC-32(z) | y block 0 | CRC-32 | y block 1 | CRC-32 | ...

Every prefix at least as long as header + z stream + its CRC is a valid file. Everything read
from a file is bounded before it is used to size anything.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"\x89PGC"
VERSION = 1  # plain scale order
VERSION_ORDER_TABLE = 2  # coding order from the model's priority table (format.md 3)
VERSION_REFINED = 3  # version 2 plus a refinement pass after the base symbols (format.md 5.1)
# version 3's content under a 33-byte header that names the model by digest alone (format.md 2):
# every prefix pays for the header, so its bytes are the dearest of the file
VERSION_COMPACT = 4
# version 4's layout; the refinement bits are coded with the model's refinement table
# (format.md 5.1), so the model that wrote it must have one
VERSION_REFINE_TABLE = 5
COMPACT_VERSIONS = (VERSION_COMPACT, VERSION_REFINE_TABLE)
VERSIONS = (VERSION, VERSION_ORDER_TABLE, VERSION_REFINED, VERSION_COMPACT, VERSION_REFINE_TABLE)
MAX_NAME = 64
MAX_SIDE = 65535
# 67 Mpx (e.g. 8192 x 8192). The transforms run tile by tile above 2 Mpx (tiling.py), so what
# grows with the image is the latent (M values per 256 pixels) and the image itself.
MAX_PIXELS = 1 << 26
MAX_FILE_BYTES = 1 << 30  # no valid file comes near this; inputs are read up to it
# y payload bytes per CRC block: 4 bytes of CRC per 4 KiB (0.1%) instead of per 1 KiB (0.4%) in
# every file; a corrupt block ends decoding at most 4 KiB earlier than it must
Y_BLOCK = 4096
MAX_BITS_PER_SYMBOL = 24  # the tables' rarest symbol costs 22 bits; a stream can't exceed this

# The numeric header fields in file order, (name, bytes), big-endian. Versions 1 to 3 put them
# after magic, version, flags, name length, name and digest; versions 4 and 5 after magic,
# version and digest. "refined" counts the refinement symbols after the base ones (format.md
# 5.1); versions 4 and 5 store the y block size as its base-2 logarithm.
_WIDE_FIELDS = (("width", 4), ("height", 4), ("z_len", 4), ("y_len", 4), ("y_block", 2))
_COMPACT_FIELDS = (("width", 2), ("height", 2), ("z_len", 3), ("y_len", 4), ("y_block_log2", 1),
                   ("refined", 4))
_COMPACT_START = 13  # magic 4, version 1, digest 8


def field_layout(version: int, name_len: int = 0) -> tuple[dict[str, tuple[int, int]], int]:
    """({field: (offset, size)}, header size including its CRC) of a header of this version."""
    if version in COMPACT_VERSIONS:
        fields, pos = _COMPACT_FIELDS, _COMPACT_START
    else:
        fields = _WIDE_FIELDS + ((("refined", 4),) if version == VERSION_REFINED else ())
        pos = 15 + name_len
    layout = {}
    for name, size in fields:
        layout[name] = (pos, size)
        pos += size
    return layout, pos + 4


def header_size(version: int, name_len: int = 0) -> int:
    return field_layout(version, name_len)[1]


def _printable(name: bytes) -> bool:
    """Printable ASCII (0x20..0x7e): a name from a file goes into one-line error messages."""
    return all(0x20 <= b <= 0x7E for b in name)


class FormatError(Exception):
    """The data is not a (decodable) .pic file: one line for the user."""


@dataclass
class Header:
    model_name: str | None  # None when read from a version 4 or 5 header: the digest only
    model_digest: bytes
    width: int
    height: int
    z_len: int  # bytes of the z stream
    y_len: int  # bytes of the complete y stream
    y_block: int = Y_BLOCK
    version: int = VERSION
    refined: int = 0  # refinement symbols after the n base symbols (versions 3 to 5)

    def pack(self) -> bytes:
        if self.refined and self.version < VERSION_REFINED:
            raise ValueError(f"refinement symbols need format version {VERSION_REFINED} or later")
        if len(self.model_digest) != 8:
            raise ValueError("the model digest is 8 bytes")
        if self.version in COMPACT_VERSIONS:
            if self.y_block & (self.y_block - 1) or not 256 <= self.y_block <= 65536:
                raise ValueError(f"a version {self.version} y block size is a power of two from 256 to 65536")
            body = MAGIC + bytes([self.version]) + self.model_digest
        else:
            name = (self.model_name or "").encode("ascii")
            if not 1 <= len(name) <= MAX_NAME or not _printable(name):
                raise ValueError(f"model name must be 1..{MAX_NAME} printable ASCII characters")
            body = MAGIC + bytes([self.version, 0, len(name)]) + name + self.model_digest
        values = {"width": self.width, "height": self.height, "z_len": self.z_len,
                  "y_len": self.y_len, "y_block": self.y_block,
                  "y_block_log2": self.y_block.bit_length() - 1, "refined": self.refined}
        for name, (_, size) in field_layout(self.version, self._name_len)[0].items():
            try:
                body += values[name].to_bytes(size, "big")
            except OverflowError:
                raise ValueError(f"{name} {values[name]} does not fit the {size}-byte header field") from None
        return body + struct.pack(">I", zlib.crc32(body))

    @property
    def _name_len(self) -> int:
        return 0 if self.version in COMPACT_VERSIONS else len(self.model_name or "")

    @property
    def size(self) -> int:
        return header_size(self.version, self._name_len)

    @property
    def min_length(self) -> int:
        """Shortest decodable prefix: header, z stream and its CRC."""
        return self.size + self.z_len + 4

    def require_decodable(self, available: int) -> None:
        """Raise the user-facing error when fewer than min_length bytes are present."""
        if available < self.min_length:
            raise FormatError(f"file too short: {available} bytes; this file needs at least "
                              f"{self.min_length} bytes (header and z stream) to decode")

    @property
    def full_length(self) -> int:
        blocks = -(-self.y_len // self.y_block)
        return self.min_length + self.y_len + 4 * blocks


def latent_sizes(width: int, height: int) -> tuple[int, int]:
    """(elements of z per channel, elements of y per channel) of a width x height image."""
    pw, ph = -(-width // 64), -(-height // 64)
    return pw * ph, 16 * pw * ph


def pack(header: Header, z_bytes: bytes, y_bytes: bytes) -> bytes:
    assert len(z_bytes) == header.z_len and len(y_bytes) == header.y_len
    parts = [header.pack(), z_bytes, struct.pack(">I", zlib.crc32(z_bytes))]
    for i in range(0, len(y_bytes), header.y_block):
        block = y_bytes[i:i + header.y_block]
        parts += [block, struct.pack(">I", zlib.crc32(block))]
    return b"".join(parts)


def parse_header(data: bytes, z_channels: int | None = None, y_channels: int | None = None) -> Header:
    """Read and bound the header. Channel counts (from the model) tighten the length bounds."""
    if len(data) < 5:
        raise FormatError(f"not a .pic file: only {len(data)} bytes")
    if data[:4] != MAGIC:
        raise FormatError("not a .pic file (bad magic bytes)")
    version = data[4]
    if version not in VERSIONS:
        raise FormatError(f"unsupported .pic format version {version} (this progcodec reads "
                          f"{', '.join(map(str, VERSIONS))})")
    name_len = 0
    if version not in COMPACT_VERSIONS:
        if len(data) < 7:
            raise FormatError(f"file too short: {len(data)} bytes")
        name_len = data[6]
        if not 1 <= name_len <= MAX_NAME:
            raise FormatError(f"corrupt header: model name length {name_len}")
    layout, size = field_layout(version, name_len)
    if len(data) < size:
        raise FormatError(f"file too short: {len(data)} bytes, the header alone needs {size}")
    body, (crc,) = data[:size - 4], struct.unpack(">I", data[size - 4:size])
    if zlib.crc32(body) != crc:
        raise FormatError("corrupt header (checksum mismatch)")
    f = {k: int.from_bytes(data[off:off + n], "big") for k, (off, n) in layout.items()}
    name = None
    if version in COMPACT_VERSIONS:
        digest = data[5:13]
        if not 8 <= f["y_block_log2"] <= 16:
            raise FormatError(f"corrupt header: y block size 2^{f['y_block_log2']}")
        y_block = 1 << f["y_block_log2"]
    else:
        if data[5] != 0:
            raise FormatError(f"unsupported .pic flags {data[5]:#04x} (this progcodec knows none)")
        if not _printable(data[7:7 + name_len]):  # no newline or escape sequence reaches a terminal
            raise FormatError("corrupt header: model name is not printable ASCII")
        name = data[7:7 + name_len].decode("ascii")
        digest = data[7 + name_len:15 + name_len]
        y_block = f["y_block"]
    width, height, z_len, y_len, refined = f["width"], f["height"], f["z_len"], f["y_len"], f.get("refined", 0)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FormatError(f"corrupt header: image size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise FormatError(f"image of {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")
    if not 256 <= y_block <= 65536 or y_block % 4:
        raise FormatError(f"corrupt header: y block size {y_block}")
    nz, ny = latent_sizes(width, height)
    zc, yc = z_channels or 1024, y_channels or 1024
    if z_len % 4 or z_len > 4 + nz * zc * MAX_BITS_PER_SYMBOL // 8 + 8:
        raise FormatError(f"corrupt header: z stream length {z_len}")
    if refined > ny * yc:  # at most one refinement symbol per y element
        raise FormatError(f"corrupt header: {refined} refinement symbols")
    if y_len % 4 or y_len > 4 + (ny * yc + refined) * MAX_BITS_PER_SYMBOL // 8 + 8:
        raise FormatError(f"corrupt header: y stream length {y_len}")
    return Header(name, digest, width, height, z_len, y_len, y_block, version, refined)


@dataclass
class Parsed:
    header: Header
    z_bytes: bytes
    y_bytes: bytes  # the y stream prefix that is present (CRC-verified blocks + unverified tail)
    y_complete: bool  # every byte of the y stream is present and verified
    verified_bytes: int  # y bytes covered by a matching CRC
    warnings: list[str] = field(default_factory=list)
    corrupt: bool = False  # a y block failed its CRC: the stream was ended before it


def parse(data: bytes, z_channels: int | None = None, y_channels: int | None = None) -> Parsed:
    h = parse_header(data, z_channels, y_channels)
    h.require_decodable(len(data))
    z_start = h.size
    z_bytes = data[z_start:z_start + h.z_len]
    (z_crc,) = struct.unpack(">I", data[z_start + h.z_len:h.min_length])
    if zlib.crc32(z_bytes) != z_crc:
        raise FormatError("corrupt file: the z stream fails its checksum")

    warnings: list[str] = []
    parts, pos, remaining, verified, corrupt = [], h.min_length, h.y_len, 0, False
    while remaining > 0 and pos < len(data):
        n = min(h.y_block, remaining)
        block = data[pos:pos + n]
        crc_bytes = data[pos + n:pos + n + 4]
        if len(block) < n or len(crc_bytes) < 4:
            parts.append(block)  # the cut falls in this block: usable, but unverified
            pos += len(block) + len(crc_bytes)
            remaining -= len(block)
            break
        if zlib.crc32(block) != struct.unpack(">I", crc_bytes)[0]:
            corrupt = True
            warnings.append(f"y block at byte {pos} fails its checksum: decoded the "
                            f"{verified} intact bytes before it")
            break
        parts.append(block)
        verified += n
        remaining -= n
        pos += n + 4
    if not corrupt and remaining == 0 and len(data) > h.full_length:
        warnings.append(f"{len(data) - h.full_length} trailing bytes after the end of the file ignored")
    y_bytes = b"".join(parts)
    return Parsed(h, z_bytes, y_bytes, y_complete=(verified == h.y_len), verified_bytes=verified,
                  warnings=warnings, corrupt=corrupt)

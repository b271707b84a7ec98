"""Range coding of z and y with constriction (DESIGN.md section 4).

Only integers and shipped tables reach the coder. y is coded as one range-coded stream in the
global order (scale index descending), which is made of runs of equal scale index: one
Categorical model per run. Words are 32-bit, written big-endian so that a byte cut keeps the
high bytes.

A truncated stream decodes silently into garbage after the last reliable symbol, so the decoder
re-encodes what it decoded and keeps symbol i only while the encoder's sealed word count after
it, plus one, fits in the complete words received (DESIGN.md 4, option a). A sealed count covers
every word the encoder has emitted plus at least one word of its 64-bit state, so the kept
prefix always lies inside the interval of every kept symbol.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import constriction

from .tables import CodingTables

_Categorical = constriction.stream.model.Categorical
_Encoder = constriction.stream.queue.RangeEncoder
_Decoder = constriction.stream.queue.RangeDecoder


class StreamError(Exception):
    pass


# The "level" of a refinement symbol in a sequence of levels (format.md 5.1): one bit, coded
# with probability 1/2, or (format version 5) with the model's refinement table, a pair of counts
# per element chosen by its scale index and base symbol (tables.refine_rows).
REFINE = -1
_REFINE_MODEL = _Categorical(np.array([1.0, 1.0]), perfect=False)
_REFINE_FAMILY = _Categorical(perfect=False)  # per-element counts passed with the symbols
_CHUNK = 1 << 20  # refinement bits per constriction call: bounds the float64 counts in memory
# symbols per step of _longest_prefix: a step that fails is bisected, so a search costs about one
# pass over the run, not one per bisection step
_STEP = 4096


def words_to_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=np.uint32).astype(">u4").tobytes()


def bytes_to_words(data: bytes, pad_words: int = 0) -> tuple[np.ndarray, int]:
    """Big-endian bytes -> uint32 words (a partial last word padded with zero bytes).

    Returns (words with `pad_words` zero words appended, number of complete words).
    """
    full = len(data) // 4
    padded = data + b"\0" * ((-len(data)) % 4) + b"\0" * (4 * pad_words)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32), full


class Models:
    """constriction models built from one model's tables, once per process."""

    def __init__(self, tables: CodingTables):
        self.tables = tables

    @lru_cache(maxsize=None)
    def z(self, c: int):
        counts, offset = self.tables.z_row(c)
        return _Categorical(counts.astype(np.float64), perfect=False), offset, len(counts)

    @lru_cache(maxsize=None)
    def y(self, level: int):
        """(model, r) of a y run: symbols -r..r are coded as symbol + r. REFINE: bits 0/1."""
        if level == REFINE:
            return _REFINE_MODEL, 0
        counts, radius = self.tables.y_row(level)
        return _Categorical(counts.astype(np.float64), perfect=False), radius

    def run(self, level: int, levels_in_order: np.ndarray, symbols: np.ndarray) -> "_Run":
        """The coder of one run of `level`. A refinement run (the last; bit i refines element i
        in coding order) takes its contexts from the base levels and symbols, which the decoder
        has by then."""
        if level == REFINE and self.tables.refine_counts is not None:
            return _TableRun(self.tables, levels_in_order, symbols)
        return _Run(*self.y(level))

    def y_support(self, level: int) -> tuple[int, int]:
        """Smallest and largest symbol of a y run's table."""
        _, r = self.y(level)
        return (0, 1) if level == REFINE else (-r, r)


class _Run:
    """Codes a run whose symbols share one table: symbols -r..r as symbol + r."""

    def __init__(self, model, r: int):
        self.model, self.r = model, r

    def encode(self, enc, symbols: np.ndarray, start: int = 0) -> None:
        """Encode `symbols`, the run's symbols from position `start` on."""
        enc.encode((symbols + self.r).astype(np.int32), self.model)

    def decode(self, dec, count: int, start: int = 0) -> np.ndarray:
        return dec.decode(self.model, count).astype(np.int64) - self.r


class _TableRun(_Run):
    """Codes refinement bits with one pair of counts per bit (format.md 5.1, version 5)."""

    def __init__(self, tables: CodingTables, levels_in_order: np.ndarray, symbols: np.ndarray):
        super().__init__(_REFINE_FAMILY, 0)
        self.tables, self.levels, self.symbols = tables, levels_in_order, symbols

    def _counts(self, start: int, end: int) -> np.ndarray:
        return self.tables.refine_rows(self.levels[start:end], self.symbols[start:end]).astype(np.float64)

    def encode(self, enc, symbols: np.ndarray, start: int = 0) -> None:
        for i in range(0, len(symbols), _CHUNK):
            part = symbols[i:i + _CHUNK].astype(np.int32)
            enc.encode(part, self.model, self._counts(start + i, start + i + len(part)))

    def decode(self, dec, count: int, start: int = 0) -> np.ndarray:
        parts = [dec.decode(self.model, self._counts(start + i, start + min(count, i + _CHUNK)))
                 for i in range(0, count, _CHUNK)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


# ---- z: one table per channel, channels in order, raster order within a channel -----------
def clamp_z(z_sym: np.ndarray, models: Models) -> np.ndarray:
    """Clamp z symbols (C, H, W) to each channel's table support. The encoder must derive mu,
    the scale indexes and the order from the clamped symbols: they are what the decoder gets."""
    out = z_sym.astype(np.int64).copy()
    for c in range(out.shape[0]):
        _, offset, size = models.z(c)
        np.clip(out[c], offset, offset + size - 1, out=out[c])
    return out


def encode_z(z_sym: np.ndarray, models: Models) -> bytes:
    """z_sym: int (C, H, W), already clamped by clamp_z."""
    enc = _Encoder()
    for c in range(z_sym.shape[0]):
        model, offset, size = models.z(c)
        s = z_sym[c].ravel() - offset
        if s.size and (s.min() < 0 or s.max() >= size):
            raise ValueError("z symbols outside the table support: clamp_z first")
        enc.encode(s.astype(np.int32), model)
    return words_to_bytes(enc.get_compressed())


def decode_z(data: bytes, shape: tuple[int, int, int], models: Models) -> np.ndarray:
    words, _ = bytes_to_words(data, pad_words=2)
    dec = _Decoder(words)
    c_n, h, w = shape
    out = np.empty((c_n, h * w), dtype=np.int64)
    try:
        for c in range(c_n):
            model, offset, _ = models.z(c)
            out[c] = dec.decode(model, h * w).astype(np.int64) + offset
    except (AssertionError, ValueError, RuntimeError) as e:
        raise StreamError(f"corrupt z stream: {e}") from None
    z = out.reshape(shape)
    # The CRC catches damage; re-encoding catches a stream that is not what it claims (e.g. too
    # short for its symbols, read past its end as zeros): the coder is deterministic.
    if encode_z(z, models) != data:
        raise StreamError("corrupt z stream: it does not re-encode to itself")
    return z


# ---- y: runs of equal scale index in coding order --------------------------------------------
def runs(levels_in_order: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, level) of every run of equal level in a sequence."""
    n = len(levels_in_order)
    if n == 0:
        return []
    cut = np.flatnonzero(np.diff(levels_in_order)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [n]])
    return [(int(s), int(e), int(levels_in_order[s])) for s, e in zip(starts, ends)]


def clamp_y_symbols(symbols: np.ndarray, levels_in_order: np.ndarray, models: Models) -> np.ndarray:
    """Clamp each symbol to its table's support (the encoder reconstructs with the same)."""
    out = symbols.astype(np.int64).copy()
    for s, e, lev in runs(levels_in_order):
        np.clip(out[s:e], *models.y_support(lev), out=out[s:e])
    return out


def encode_y(symbols: np.ndarray, levels_in_order: np.ndarray, models: Models) -> bytes:
    """symbols: clamped int (n,) in coding order; levels_in_order: scale index of each (REFINE
    for a refinement bit)."""
    enc = _Encoder()
    for s, e, lev in runs(levels_in_order):
        models.run(lev, levels_in_order, symbols).encode(enc, symbols[s:e])
    return words_to_bytes(enc.get_compressed())


def decode_y(data: bytes, levels_in_order: np.ndarray, models: Models, complete: bool) -> tuple[np.ndarray, int]:
    """Decode the y symbols a (possibly cut) stream supports.

    Returns (symbols (n,) with zeros past the reliable prefix, number of reliable symbols).
    `complete`: the stream is whole (all bytes present and verified): every symbol is kept.
    """
    n = len(levels_in_order)
    words, full_words = bytes_to_words(data, pad_words=4)
    dec = _Decoder(words)
    enc = _Encoder()
    out = np.zeros(n, dtype=np.int64)
    for s, e, lev in runs(levels_in_order):
        run = models.run(lev, levels_in_order, out)  # out holds every base symbol by a refinement run
        before_dec = dec.clone()
        try:
            got = run.decode(dec, e - s)
        except (AssertionError, ValueError, RuntimeError):
            if complete:
                raise StreamError("corrupt y stream") from None
            got = _decode_until_failure(before_dec, run, e - s)
        if complete:
            out[s:s + len(got)] = got
            continue
        before_enc = enc.clone()
        if len(got) == e - s:
            run.encode(enc, got)
            if enc.num_words() + 1 <= full_words:
                out[s:e] = got
                continue
        # The cut falls in this run: the largest m with sealed(prefix + m) + 1 <= full_words
        def fits(state, start, stop):
            trial = state.clone()
            run.encode(trial, got[start:stop], start)
            return trial if trial.num_words() + 1 <= full_words else None
        lo, _ = _longest_prefix(before_enc, len(got), fits)
        out[s:s + lo] = got[:lo]
        return out, s + lo
    return out, n


def _decode_until_failure(dec, run: _Run, count: int) -> np.ndarray:
    """After a failed batch: the longest prefix of the run that decodes without an error.
    Symbol by symbol took 1.5 s on a cut refinement run of 10^5 bits (scripts/cut_decode_time.py).
    The search's state carries the symbols it decoded, so the prefix is not decoded again."""
    def decodes(state, start, stop):
        coder, parts = state
        trial = coder.clone()
        try:
            got = run.decode(trial, stop - start, start)
        except (AssertionError, ValueError, RuntimeError):
            return None
        return trial, parts + [got]
    _, (_, parts) = _longest_prefix((dec, []), count, decodes)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _longest_prefix(state, count: int, extend):
    """(m, the state after m symbols) for the largest m <= count such that the symbols 0..m-1
    extend the coder `state`, when one that fails fails every longer prefix: _STEP symbols at a
    time, then by bisection inside the step that fails, so about one pass over the prefix.
    extend(state, start, stop) returns a new state after symbols start..stop-1, leaving `state`
    as it is, or None."""
    start, stop = 0, 0
    while start < count:
        stop = min(start + _STEP, count)
        after = extend(state, start, stop)
        if after is None:
            break
        state, start = after, stop
    lo, hi, best = start, max(start, stop - 1), state
    while lo < hi:
        mid = (lo + hi + 1) // 2
        after = extend(state, start, mid)
        if after is None:
            hi = mid - 1
        else:
            lo, best = mid, after
    return lo, best

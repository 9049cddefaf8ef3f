"""Read TensorFlow 1.x "V2" checkpoints (tensor bundles) with the standard library and numpy.

A checkpoint prefix ``P`` names two files:

* ``P.index``: an SSTable (the LevelDB table format) mapping each variable name to a
  ``BundleEntryProto`` (dtype, shape, shard, byte offset, byte size, CRC32C); the empty key
  holds a ``BundleHeaderProto``.
* ``P.data-00000-of-0000N``: the raw little-endian tensor bytes, concatenated.

Only what these files use is implemented: uncompressed table blocks (a Snappy-compressed block
raises :class:`CheckpointError`), whole (unsliced) tensors, and numeric dtypes.  CRC32C checksums of
the table blocks are always checked; tensor checksums are checked when ``verify=True``.

No TensorFlow and no protobuf package: a minimal protobuf wire-format decoder is enough for the two
messages involved.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CheckpointError",
    "TensorEntry",
    "crc32c",
    "read_checkpoint",
    "read_index",
]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5  # 1 byte compression type + 4 bytes masked CRC32C
_NO_COMPRESSION = 0
_SNAPPY = 1

# tensorflow/core/framework/types.proto -> numpy (little-endian).
_DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}


class CheckpointError(ValueError):
    """The checkpoint files are malformed, corrupt, or use a feature this reader lacks."""


# --------------------------------------------------------------------------- CRC32C (Castagnoli)


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``.

    Pure Python (about 10 MB/s); fine for index blocks and for the few MB of a musicnn model.
    """
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    # LevelDB/TF store CRCs "masked" so that CRCs of data containing CRCs behave well.
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint too long")


def _proto_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int | bytes]]:
    """Yield ``(field_number, value)``; varints and fixed ints as int, length-delimited as bytes."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, value
        elif wire == 1:
            yield field, struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise CheckpointError("truncated length-delimited field")
            yield field, bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            yield field, struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")


@dataclass(frozen=True)
class TensorEntry:
    """One ``BundleEntryProto``: where a tensor lives in the data shard(s)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1; string name = 2}; bool unknown_rank = 3
    dims: list[int] = []
    for field, value in _proto_fields(buf):
        if field == 2:
            assert isinstance(value, bytes)
            size = 0
            for f2, v2 in _proto_fields(value):
                if f2 == 1:
                    assert isinstance(v2, int)
                    size = v2 - (1 << 64) if v2 >= 1 << 63 else v2  # int64 two's complement
            dims.append(size)
        elif field == 3 and value:
            raise CheckpointError("tensor with unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    # BundleEntryProto: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6 (fixed32), slices=7
    shape: tuple[int, ...]
    dtype, shape, shard_id, offset, size, crc = 0, (), 0, 0, 0, None
    for field, value in _proto_fields(buf):
        if field == 1:
            assert isinstance(value, int)
            dtype = value
        elif field == 2:
            assert isinstance(value, bytes)
            shape = _parse_shape(value)
        elif field == 3:
            assert isinstance(value, int)
            shard_id = value
        elif field == 4:
            assert isinstance(value, int)
            offset = value
        elif field == 5:
            assert isinstance(value, int)
            size = value
        elif field == 6:
            assert isinstance(value, int)
            crc = value
        elif field == 7:
            raise CheckpointError(f"{name!r}: partitioned (sliced) tensors are not supported")
    return TensorEntry(name, dtype, shape, shard_id, offset, size, crc)


# --------------------------------------------------------------------------- SSTable


def _read_block(table: bytes, offset: int, size: int) -> memoryview:
    end = offset + size
    if end + _BLOCK_TRAILER_LEN > len(table):
        raise CheckpointError("block handle points past the end of the index file")
    kind = table[end]
    stored = struct.unpack_from("<I", table, end + 1)[0]
    # The CRC covers the block contents and the compression-type byte.
    if crc32c(table[offset : end + 1]) != _unmask_crc(stored):
        raise CheckpointError(f"CRC32C mismatch in index block at offset {offset}")
    if kind == _SNAPPY:
        raise CheckpointError("Snappy-compressed index blocks are not supported")
    if kind != _NO_COMPRESSION:
        raise CheckpointError(f"unknown block compression type {kind}")
    return memoryview(table)[offset:end]


def _block_entries(block: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """Yield ``(key, value)`` from a LevelDB block (prefix-compressed keys, restart array)."""
    if len(block) < 4:
        raise CheckpointError("block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise CheckpointError("bad restart count in block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise CheckpointError("corrupt block entry")
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_items(table: bytes) -> Iterator[tuple[bytes, memoryview]]:
    if len(table) < _FOOTER_LEN:
        raise CheckpointError("index file too short to be an SSTable")
    footer = memoryview(table)[len(table) - _FOOTER_LEN :]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise CheckpointError("bad SSTable magic number (not a TF V2 checkpoint index)")
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    for _, handle in _block_entries(_read_block(table, index_off, index_size)):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        yield from _block_entries(_read_block(table, off, size))


def read_index(prefix: str | os.PathLike[str]) -> tuple[int, dict[str, TensorEntry]]:
    """Parse ``<prefix>.index``.

    Parameters
    ----------
    prefix
        Checkpoint prefix. musicnn's prefixes are a directory plus an empty name, so
        ``"…/MTT_musicnn/"`` names ``…/MTT_musicnn/.index``.

    Returns
    -------
    num_shards, entries
        The number of data shards from the header, and each tensor's entry by name.
    """
    table = Path(f"{os.fspath(prefix)}.index").read_bytes()
    num_shards = 1
    entries: dict[str, TensorEntry] = {}
    for key, value in _table_items(table):
        if key == b"":
            # BundleHeaderProto: num_shards=1, endianness=2 (0 little), version=3
            for field, v in _proto_fields(value):
                if field == 1:
                    assert isinstance(v, int)
                    num_shards = v
                elif field == 2 and v != 0:
                    raise CheckpointError("big-endian checkpoints are not supported")
            continue
        name = key.decode("utf-8")
        entries[name] = _parse_entry(name, bytes(value))
    return num_shards, entries


def read_checkpoint(
    prefix: str | os.PathLike[str],
    *,
    names: list[str] | None = None,
    exclude_optimizer: bool = True,
    verify: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """Load tensors from a TF V2 checkpoint.

    Parameters
    ----------
    prefix
        Checkpoint prefix (see :func:`read_index`).
    names
        Variables to load; default all (subject to ``exclude_optimizer``).
    exclude_optimizer
        Skip optimizer slots (names ending in ``/Adam`` or ``/Adam_1``, and ``beta1_power`` …) when
        ``names`` is not given.
    verify
        Check each loaded tensor's CRC32C (pure Python: ~0.3 s per MB).

    Returns
    -------
    dict[str, np.ndarray]
        Tensor name to a C-contiguous array of the stored dtype and shape.
    """
    num_shards, entries = read_index(prefix)
    if names is None:
        wanted = [
            n
            for n in entries
            if not (exclude_optimizer and (n.split("/")[-1].startswith("Adam") or "_power" in n))
        ]
    else:
        missing = [n for n in names if n not in entries]
        if missing:
            raise KeyError(f"not in checkpoint {os.fspath(prefix)!r}: {missing}")
        wanted = list(names)

    shards: dict[int, bytes] = {}
    out: dict[str, npt.NDArray[Any]] = {}
    for name in wanted:
        e = entries[name]
        if e.dtype not in _DTYPES:
            raise CheckpointError(f"{name!r}: unsupported dtype enum {e.dtype}")
        if e.shard_id not in shards:
            path = Path(f"{os.fspath(prefix)}.data-{e.shard_id:05d}-of-{num_shards:05d}")
            shards[e.shard_id] = path.read_bytes()
        data = shards[e.shard_id]
        if e.offset + e.size > len(data):
            raise CheckpointError(f"{name!r}: extends past the end of its data shard")
        raw = data[e.offset : e.offset + e.size]
        if verify and e.crc32c is not None and _unmask_crc(e.crc32c) != crc32c(raw):
            raise CheckpointError(f"{name!r}: CRC32C mismatch in data shard")
        dt = _DTYPES[e.dtype]
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dt.itemsize != e.size:
            raise CheckpointError(f"{name!r}: size {e.size} does not match shape {e.shape}")
        arr = np.frombuffer(raw, dtype=dt, count=count).reshape(e.shape)
        out[name] = arr.astype(dt.newbyteorder("="), copy=True)
    return out

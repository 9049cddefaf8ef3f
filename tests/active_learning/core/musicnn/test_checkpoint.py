"""The TF checkpoint reader on a handcrafted tensor bundle, and on the real checkpoints."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from active_learning.core.musicnn.checkpoint import (
    CheckpointError,
    crc32c,
    read_checkpoint,
    read_index,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _entry(dtype: int, shape: tuple[int, ...], offset: int, data: bytes) -> bytes:
    dims = b"".join(
        _field(2, 2, _varint(len(d)) + d) for d in (_field(1, 0, _varint(s)) for s in shape)
    )
    msg = _field(1, 0, _varint(dtype)) + _field(2, 2, _varint(len(dims)) + dims)
    msg += _field(4, 0, _varint(offset)) + _field(5, 0, _varint(len(data)))
    return msg + _field(6, 5, struct.pack("<I", _masked(data)))


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    prev = b""
    for key, value in items:  # prefix-compress against the previous key; one restart point
        shared = 0
        while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
            shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        prev = key
    return bytes(out + struct.pack("<II", 0, 1))


def _write_bundle(prefix: Path, tensors: dict[str, np.ndarray], *, compression: int = 0) -> None:
    data = bytearray()
    items = [(b"", _field(1, 0, _varint(1)))]  # BundleHeaderProto num_shards=1
    for name in sorted(tensors):
        raw = tensors[name].astype("<f4").tobytes()
        items.append((name.encode(), _entry(1, tensors[name].shape, len(data), raw)))
        data += raw
    table = bytearray()

    def add_block(contents: bytes) -> bytes:
        handle = _varint(len(table)) + _varint(len(contents))
        trailer = bytes([compression])
        table.extend(contents + trailer + struct.pack("<I", _masked(contents + trailer)))
        return handle

    data_handle = add_block(_block(items))
    meta_handle = add_block(_block([]))
    index_handle = add_block(_block([(items[-1][0] + b"\xff", data_handle)]))
    footer = meta_handle + index_handle
    footer += b"\0" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(table + footer))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283


def test_handcrafted_bundle(tmp_path):
    tensors = {
        "dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
        "dense/bias": np.array([0.5, -1.5, 2.0], np.float32),
        "dense/kernel/Adam": np.ones((2, 3), np.float32),
        "scalar": np.array(3.25, np.float32),
    }
    prefix = tmp_path / "ckpt"
    _write_bundle(prefix, tensors)
    num_shards, entries = read_index(prefix)
    assert num_shards == 1
    assert set(entries) == set(tensors)
    got = read_checkpoint(prefix)
    assert set(got) == {"dense/kernel", "dense/bias", "scalar"}  # optimizer slot skipped
    for name, value in got.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, tensors[name])
    assert read_checkpoint(prefix, names=["dense/kernel/Adam"])["dense/kernel/Adam"].shape == (2, 3)
    with pytest.raises(KeyError):
        read_checkpoint(prefix, names=["missing"])


def test_corruption_and_snappy_are_reported(tmp_path):
    tensors = {"w": np.arange(4, dtype=np.float32)}
    prefix = tmp_path / "ckpt"
    _write_bundle(prefix, tensors)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(b"\x01" + data.read_bytes()[1:])
    with pytest.raises(CheckpointError, match="CRC32C"):
        read_checkpoint(prefix)
    _write_bundle(tmp_path / "snappy", tensors, compression=1)
    with pytest.raises(CheckpointError, match="Snappy"):
        read_index(tmp_path / "snappy")


def test_real_checkpoint_shapes(musicnn_weights):
    w = read_checkpoint(f"{musicnn_weights}/MSD_musicnn/")
    assert w["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert w["conv2d_1/kernel"].shape == (7, 67, 1, 204)
    assert w["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    assert w["dense/kernel"].shape == (1506, 200)
    assert w["dense_1/kernel"].shape == (200, 50)
    assert not any("Adam" in k for k in w)

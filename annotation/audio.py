"""Reading audio headers and proving a file decodes, without loading it whole.

soundfile (libsndfile 1.2) reads wav, flac, ogg and mp3. It is lenient in ways an import must not be:
a truncated WAV opens with a shorter frame count, and a truncated MP3 opens with its full header length
but decodes nothing at the tail. ``probe_audio`` checks both ends of the stream so a damaged file is
reported as failed, with the reason, instead of entering a project.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

from refrain.errors import Invalid

SUPPORTED_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3"})
_TAIL_FRAMES = 4096


class AudioProbeError(Invalid):
    """The file is not usable audio; ``reason`` is shown to the user and stored on the clip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioProbe:
    format: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


def sha256_of(fh: BinaryIO, *, chunk: int = 1 << 20) -> tuple[str, int]:
    """Content hash and size of an open binary file, streamed."""
    digest = hashlib.sha256()
    size = 0
    while block := fh.read(chunk):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _riff_declared_data_bytes(fh: BinaryIO) -> int | None:
    """Size of the ``data`` chunk a RIFF/WAVE header declares, or None if not found."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            return int(size)
        fh.seek(size + (size & 1), 1)


def probe_audio(path: str | Path) -> AudioProbe:
    """Read the header of ``path`` and check that its first and last frames decode.

    Raises
    ------
    AudioProbeError
        With a human-readable reason: missing, empty, unsupported, unreadable or truncated.
    """
    p = Path(path)
    if not p.exists():
        raise AudioProbeError("file not found")
    if not p.is_file():
        raise AudioProbeError("not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise AudioProbeError("empty file (0 bytes)")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise AudioProbeError(
            f"unsupported file type {suffix or '(none)'}; expected one of "
            + ", ".join(sorted(SUPPORTED_EXTENSIONS))
        )
    try:
        with sf.SoundFile(str(p)) as f:
            frames, sr, channels, fmt = f.frames, f.samplerate, f.channels, f.format
            subtype = f.subtype
            if sr <= 0 or channels <= 0:
                raise AudioProbeError(f"invalid header: {sr} Hz, {channels} channels")
            if frames <= 0:
                raise AudioProbeError("no audio frames")
            head = f.read(min(frames, _TAIL_FRAMES), dtype="float32")
            if len(head) == 0:
                raise AudioProbeError("first frames do not decode")
            start = max(0, frames - _TAIL_FRAMES)
            f.seek(start)
            tail = f.read(dtype="float32")
            if len(tail) < frames - start:
                raise AudioProbeError(
                    f"truncated: header says {frames} frames, decoding stops before the end"
                )
    except AudioProbeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = str(getattr(exc, "error_string", "") or exc)
        # libsndfile's mp3 reader reports a non-MPEG file as "does not exist"; the file does.
        if "does not exist" in detail or "not a regular file" in detail:
            detail = f"not a valid {suffix.lstrip('.')} stream"
        raise AudioProbeError(f"unreadable audio: {detail}") from exc

    if fmt == "WAV" and subtype and subtype.startswith(("PCM", "FLOAT", "DOUBLE")):
        with p.open("rb") as fh:
            declared = _riff_declared_data_bytes(fh)
        sample_bytes = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4}.get(
            subtype, 8 if subtype == "DOUBLE" else 4
        )
        actual = frames * channels * sample_bytes
        # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never filled in the size.
        if declared not in (None, 0, 0xFFFFFFFF) and declared > actual + sample_bytes * channels:
            raise AudioProbeError(
                f"truncated: header declares {declared} data bytes, file holds {actual}"
            )
    return AudioProbe(
        format=fmt.lower(),
        duration_s=frames / sr,
        sample_rate=int(sr),
        channels=int(channels),
        frames=int(frames),
    )


# --- tag-free copies (blind mode) -------------------------------------------------------------------
# Annotators must not hear or read what the container says about a file (ID3 ``TCON=Punk``, a FLAC
# ``GENRE`` comment, a WAV ``LIST/INFO`` chunk, embedded cover art). WAV, FLAC and MP3 are copied with
# only their audio structures kept, Ogg Vorbis/Opus with an empty comment header: bytewise, so the
# audio is bit-identical. What cannot be parsed that way (chained Ogg, RF64, ...) is re-encoded
# block by block with soundfile, which writes no tags.

_COPY_BLOCK = 1 << 20
_WAV_KEEP = frozenset({b"fmt ", b"fact", b"data"})
_FLAC_KEEP = frozenset({0, 3})  # STREAMINFO, SEEKTABLE
SERVED_EXTENSIONS = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "ogg": ".ogg"}


def _copy_range(src: BinaryIO, dst: BinaryIO, length: int | None) -> int:
    """Copy ``length`` bytes (all that is left when None) from ``src`` to ``dst``; return the count."""
    copied = 0
    while length is None or copied < length:
        want = _COPY_BLOCK if length is None else min(_COPY_BLOCK, length - copied)
        block = src.read(want)
        if not block:
            break
        dst.write(block)
        copied += len(block)
    return copied


def _syncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _skip_id3v2(fh: BinaryIO) -> None:
    """Leave ``fh`` after any ID3v2 tags at its current position."""
    while True:
        pos = fh.tell()
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            fh.seek(pos)
            return
        size = _syncsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)  # footer flag
        fh.seek(pos + 10 + size)


def _strip_wav(src: BinaryIO, dst: BinaryIO) -> None:
    head = src.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioProbeError("not a RIFF/WAVE file")
    total = src.seek(0, 2)
    src.seek(12)
    dst.write(b"RIFF\0\0\0\0WAVE")
    while True:
        chunk = src.read(8)
        if len(chunk) < 8:
            break
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        start = src.tell()
        if cid == b"data":
            # Streamed WAVs leave 0 or 0xFFFFFFFF here: the data runs to the end of the file.
            size = min(size, total - start) if size not in (0, 0xFFFFFFFF) else total - start
        if cid in _WAV_KEEP:
            dst.write(cid + struct.pack("<I", size))
            copied = _copy_range(src, dst, size)
            if copied & 1:
                dst.write(b"\0")
        if cid == b"data":
            break  # anything after the samples is metadata (id3, LIST) by construction
        src.seek(start + size + (size & 1))
    riff_size = dst.tell() - 8
    dst.seek(4)
    dst.write(struct.pack("<I", riff_size))


def _strip_flac(src: BinaryIO, dst: BinaryIO) -> None:
    _skip_id3v2(src)
    if src.read(4) != b"fLaC":
        raise AudioProbeError("not a FLAC stream")
    kept: list[tuple[int, bytes]] = []
    while True:
        head = src.read(4)
        if len(head) < 4:
            raise AudioProbeError("truncated FLAC metadata")
        last, btype, size = head[0] & 0x80, head[0] & 0x7F, int.from_bytes(head[1:4], "big")
        if btype in _FLAC_KEEP:
            kept.append((btype, src.read(size)))
        else:
            src.seek(size, 1)
        if last:
            break
    if not kept or kept[0][0] != 0:
        raise AudioProbeError("FLAC stream without STREAMINFO")
    dst.write(b"fLaC")
    for i, (btype, body) in enumerate(kept):
        flag = 0x80 if i == len(kept) - 1 else 0
        dst.write(bytes([flag | btype]) + len(body).to_bytes(3, "big") + body)
    _copy_range(src, dst, None)


def _strip_mp3(src: BinaryIO, dst: BinaryIO) -> None:
    _skip_id3v2(src)
    start = src.tell()
    end = src.seek(0, 2)
    changed = True
    while changed and end > start:  # trailing tags in any order: ID3v1, APEv2, Lyrics3, ID3v2.4
        changed = False
        if end - start >= 128:
            src.seek(end - 128)
            if src.read(3) == b"TAG":
                end -= 128
                changed = True
                continue
        if end - start >= 32:
            src.seek(end - 32)
            footer = src.read(32)
            if footer[:8] == b"APETAGEX":
                size = struct.unpack("<I", footer[12:16])[0]
                has_header = struct.unpack("<I", footer[20:24])[0] & 0x80000000
                end -= size + (32 if has_header else 0)
                changed = True
                continue
        if end - start >= 15:
            src.seek(end - 15)
            tail = src.read(15)
            if tail[6:] == b"LYRICS200" and tail[:6].isdigit():
                end -= int(tail[:6]) + 15
                changed = True
                continue
        if end - start >= 10:
            src.seek(end - 10)
            foot = src.read(10)
            if foot[:3] == b"3DI":
                end -= _syncsafe(foot[6:10]) + 20
                changed = True
    if end <= start:
        raise AudioProbeError("no MPEG audio between the tags")
    src.seek(start)
    _copy_range(src, dst, end - start)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    table = _OGG_CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC_TABLE = _ogg_crc_table()


def _ogg_page(fh: BinaryIO) -> tuple[bytes, bytes, list[int]] | None:
    """The next page as (27-byte header, body, lacing values), or None at the end."""
    head = fh.read(27)
    if not head:
        return None
    if len(head) < 27 or head[:4] != b"OggS":
        raise AudioProbeError("not an Ogg stream")
    lacing = list(fh.read(head[26]))
    body = fh.read(sum(lacing))
    if len(lacing) != head[26] or len(body) != sum(lacing):
        raise AudioProbeError("truncated Ogg page")
    return head, body, lacing


def _ogg_write_page(
    dst: BinaryIO, *, head: bytes, flags: int, seq: int, lacing: list[int], body: bytes
) -> None:
    header = bytearray(head[:27])
    header[5] = flags
    header[18:22] = struct.pack("<I", seq)
    header[22:26] = b"\0\0\0\0"
    header[26] = len(lacing)
    page = bytes(header) + bytes(lacing) + body
    dst.write(page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:])


def _strip_ogg(src: BinaryIO, dst: BinaryIO) -> None:
    ogg_rewrite_comments(src, dst, comments=())


def ogg_rewrite_comments(src: BinaryIO, dst: BinaryIO, *, comments: tuple[bytes, ...]) -> None:
    """Copy a single-stream Ogg Vorbis/Opus file with its comment header replaced by ``comments``
    (``b"KEY=value"``; none for the served copy). The audio pages are copied as they are, or
    renumbered with a new CRC when the comment header takes a different number of pages."""
    first = _ogg_page(src)
    if first is None:
        raise AudioProbeError("empty Ogg stream")
    head0, body0, lacing0 = first
    serial = head0[14:18]
    if body0.startswith(b"\x01vorbis"):
        n_headers, comment = 3, b"\x03vorbis"
    elif body0.startswith(b"OpusHead"):
        n_headers, comment = 2, b"OpusTags"
    else:
        raise AudioProbeError("not a Vorbis or Opus stream")
    # Header packets 2..n: they end on a page boundary (Vorbis I and RFC 7845 require it).
    packets: list[bytes] = []
    current = b""
    old_pages = 1
    template = head0
    while len(packets) < n_headers - 1:
        page = _ogg_page(src)
        if page is None or page[0][14:18] != serial:
            raise AudioProbeError("Ogg headers incomplete or multiplexed")
        template, body, lacing = page
        old_pages += 1
        pos = 0
        for lace in lacing:
            current += body[pos : pos + lace]
            pos += lace
            if lace < 255:
                packets.append(current)
                current = b""
        if len(packets) >= n_headers - 1 and current:
            raise AudioProbeError("Ogg audio shares a page with the headers")
    vendor = b"refrain"
    tags = comment + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    tags += b"".join(struct.pack("<I", len(c)) + c for c in comments)
    if n_headers == 3:
        tags += b"\x01"  # Vorbis framing bit
    packets[0] = tags
    dst.write(head0 + bytes(lacing0) + body0)  # the identification page, as it was
    seq = 1
    # Repaginate: at most 255 lacing values per page, continued packets flagged 0x01.
    pending: list[tuple[int, bytes]] = []  # (lace, bytes)
    for packet in packets:
        laces = _lacing(packet)
        pos = 0
        for lace in laces:
            pending.append((lace, packet[pos : pos + lace]))
            pos += lace
    continued = 0
    header_template = bytearray(template)
    header_template[6:14] = b"\0" * 8  # granule 0 for header pages
    while pending:
        chunk, pending = pending[:255], pending[255:]
        _ogg_write_page(
            dst,
            head=bytes(header_template),
            flags=continued,
            seq=seq,
            lacing=[lace for lace, _ in chunk],
            body=b"".join(part for _, part in chunk),
        )
        seq += 1
        continued = 0x01 if chunk[-1][0] == 255 else 0
    shift = seq - old_pages
    while (page := _ogg_page(src)) is not None:
        head, body, lacing = page
        if head[14:18] != serial:
            raise AudioProbeError("multiplexed or chained Ogg stream")
        if shift == 0:
            dst.write(head + bytes(lacing) + body)
            continue
        old_seq = struct.unpack("<I", head[18:22])[0]
        _ogg_write_page(
            dst, head=head, flags=head[5], seq=old_seq + shift, lacing=lacing, body=body
        )


def _lacing(packet: bytes) -> list[int]:
    laces = [255] * (len(packet) // 255)
    laces.append(len(packet) % 255)
    return laces


def _reencode(src: Path, dst: Path) -> None:
    with sf.SoundFile(str(src)) as f:
        fmt, subtype = f.format, f.subtype
        with sf.SoundFile(
            str(dst), "w", samplerate=f.samplerate, channels=f.channels, format=fmt, subtype=subtype
        ) as out:
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                out.write(block)


def audio_strip_tags(src: str | Path, dst: str | Path, *, fmt: str) -> None:
    """Write ``src`` to ``dst`` without container metadata (``fmt`` as :func:`probe_audio` names it).

    Raises
    ------
    AudioProbeError
        When the file's structure cannot be parsed (the caller fails the clip with the reason).
    """
    src, dst = Path(src), Path(dst)
    stripper = {"wav": _strip_wav, "flac": _strip_flac, "mp3": _strip_mp3, "ogg": _strip_ogg}.get(
        fmt
    )
    try:
        if stripper is None:
            _reencode(src, dst)
            return
        try:
            with src.open("rb") as fin, dst.open("wb") as fout:
                stripper(fin, fout)
        except AudioProbeError:
            if fmt != "ogg":
                raise
            _reencode(src, dst)  # chained, multiplexed or odd Ogg: decode and encode again
    except AudioProbeError:
        raise
    except (OSError, struct.error, sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioProbeError(f"cannot write a tag-free copy: {exc}") from exc

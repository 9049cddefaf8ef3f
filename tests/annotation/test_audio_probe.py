from pathlib import Path

import pytest

from annotation.audio import AudioProbeError, probe_audio
from tests.factories import write_tone


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_probe_reads_header_of_each_supported_format(tmp_path: Path, suffix: str) -> None:
    path = write_tone(tmp_path / f"tone.{suffix}", seconds=1.5, sr=22050)
    probe = probe_audio(path)
    assert probe.sample_rate == 22050
    assert probe.channels == 1
    # MP3 encoders pad with a few frames; the others are exact.
    assert probe.duration_s == pytest.approx(1.5, abs=0.08 if suffix == "mp3" else 1e-6)


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_truncated_files_are_rejected_with_a_reason(tmp_path: Path, suffix: str) -> None:
    good = write_tone(tmp_path / f"good.{suffix}", seconds=2.0).read_bytes()
    bad = tmp_path / f"cut.{suffix}"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(AudioProbeError) as info:
        probe_audio(bad)
    assert "truncated" in info.value.reason or "unreadable" in info.value.reason


def test_empty_missing_garbage_and_unsupported(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioProbeError, match="empty file"):
        probe_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioProbeError, match="not found"):
        probe_audio(tmp_path / "missing.wav")
    (tmp_path / "text.ogg").write_text("not audio at all\n" * 50)
    with pytest.raises(AudioProbeError, match="unreadable"):
        probe_audio(tmp_path / "text.ogg")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AudioProbeError, match=r"unsupported file type \.txt"):
        probe_audio(tmp_path / "notes.txt")

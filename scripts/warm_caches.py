"""Install-time warm-up: librosa's numba JIT compiles on first use (~30-60 s cold); doing it once
here, with numba's on-disk cache, keeps workers and tests from paying it."""

import time

import numpy as np

t0 = time.perf_counter()
import librosa  # noqa: E402

sr = 22050
y = (0.1 * np.sin(2 * np.pi * 440 * np.arange(sr * 2) / sr)).astype(np.float32)
mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64)
librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)
librosa.feature.spectral_contrast(y=y, sr=sr)
librosa.onset.onset_strength(y=y, sr=sr)
librosa.feature.chroma_stft(y=y, sr=sr)
librosa.feature.zero_crossing_rate(y)
librosa.resample(y, orig_sr=sr, target_sr=16000, res_type="soxr_hq")
print(f"warm_caches: librosa ready in {time.perf_counter() - t0:.1f} s")

r"""Synthetic field recordings: tones and shapes on two drifting clocks (the embedded demo).

**Events.** ``events`` moments on a true timeline, ``t_0 = 5`` s and gaps
``1 s + Exp(mean 1.5 s)``, each of a class ``c`` drawn uniformly from ``classes`` (at most
6). At each event a tone sounds and a shape is shown:

* **Tone** of class ``c``: pitch ``f_c = 400 * 6^(c / (classes - 1))`` Hz (log-spaced from
  400 to 2400 Hz; 400 Hz for a single class), detuned by up to 3 %, with a second harmonic
  at 0.3 of the amplitude, a Hann envelope over 0.25-0.45 s, amplitude 0.3-0.9, centred in
  a ``clip_seconds`` clip (0.6 s; a shorter clip scales the tone's length with it) with
  white noise (standard deviation 0.02). Written as 16-bit **stereo** WAV at
  **16 kHz** (the right channel at 0.8 of the left), so that reading it exercises down-mixing
  and resampling.
* **Shape** of class ``c``: disc, square, triangle, cross, ring or diamond, of radius 35-45 %
  of the ``image_size`` side, centred within 3 pixels of the middle, grey level 0.6-1 on a
  black background with Gaussian noise (standard deviation 0.05), as an 8-bit grey PNG.

**Clocks.** The microphone's clock is true time plus jitter; the camera's is true time
minus ``clock_offset_s`` plus jitter, so the camera's offset relative to the microphone is
``+clock_offset_s``. The jitter of both is ``N(0, jitter_s^2)``. A fraction
``dropout`` of the events loses its image and as many others lose their sound, so both
devices have unmatched events.

**Output** in ``out_dir``: ``audio/event_XXXX.wav``, ``images/event_XXXX.png`` and
``manifest.csv`` with columns ``device`` (``microphone`` or ``camera``), ``file``, ``time``
(seconds on the device's clock), ``label`` (the shape's name, for both the tone and the
shape) and ``true_event`` (the ground truth the pairing is scored against). The folders and
the manifest are each written atomically, the manifest last. Everything depends only on the
arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
from skimage import io as skio

from scicontrast.errors import ConfigError
from scicontrast.io import atomic_path

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond")
RECORDING_RATE = 16000
CLIP_SECONDS = 0.6
LOWEST_PITCH_HZ = 400.0
PITCH_RANGE = 6.0  # highest / lowest pitch


def tone_pitch(label: int, classes: int) -> float:
    """The pitch (Hz) of class ``label``'s tone."""
    if classes == 1:
        return LOWEST_PITCH_HZ
    return LOWEST_PITCH_HZ * PITCH_RANGE ** (label / (classes - 1))


def tone(
    label: int, classes: int, rng: np.random.Generator, clip_seconds: float = CLIP_SECONDS
) -> np.ndarray:
    """A stereo clip ``float32 [RECORDING_RATE * clip_seconds, 2]`` of class ``label``."""
    n = round(RECORDING_RATE * clip_seconds)
    length = round(RECORDING_RATE * rng.uniform(0.25, 0.45) * (clip_seconds / CLIP_SECONDS))
    t = np.arange(length) / RECORDING_RATE
    pitch = tone_pitch(label, classes) * (1 + rng.uniform(-0.03, 0.03))
    wave = np.sin(2 * np.pi * pitch * t) + 0.3 * np.sin(4 * np.pi * pitch * t)
    clip = rng.normal(0.0, 0.02, n)
    start = (n - length) // 2
    clip[start : start + length] += rng.uniform(0.3, 0.9) * np.hanning(length) * wave / 1.3
    return np.stack([clip, 0.8 * clip], axis=1).astype(np.float32)


def shape(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey ``uint8 [size, size]`` picture of ``SHAPES[label]``."""
    centre = (size - 1) / 2 + rng.uniform(-3, 3, size=2)
    radius = rng.uniform(0.35, 0.45) * size
    rows, cols = np.mgrid[:size, :size]
    y, x = (rows - centre[0]) / radius, (cols - centre[1]) / radius
    name = SHAPES[label]
    if name == "disc":
        mask = x**2 + y**2 <= 1
    elif name == "square":
        mask = np.maximum(abs(x), abs(y)) <= 0.75
    elif name == "triangle":
        mask = (y <= 0.7) & (y >= 2 * abs(x) - 1)
    elif name == "cross":
        mask = (np.minimum(abs(x), abs(y)) <= 0.25) & (np.maximum(abs(x), abs(y)) <= 1)
    elif name == "ring":
        mask = (x**2 + y**2 <= 1) & (x**2 + y**2 >= 0.4)
    else:
        mask = abs(x) + abs(y) <= 1
    picture = mask * rng.uniform(0.6, 1.0) + rng.normal(0.0, 0.05, (size, size))
    return np.clip(np.rint(picture * 255), 0, 255).astype(np.uint8)


# Manifest rows per block written: a row per event as Python objects would grow with the events.
MANIFEST_BLOCK = 65_536
DEVICE_FILES = (("microphone", "audio", "wav"), ("camera", "images", "png"))


def write_manifest(
    path: Path, kept: dict[str, np.ndarray], times: dict[str, np.ndarray], labels: np.ndarray
) -> None:
    """The manifest CSV (module docstring), ``MANIFEST_BLOCK`` rows at a time: the
    microphone's events, then the camera's, each in event order (``kept[device]``), times
    (``times[device]``, indexed by event) rounded to milliseconds."""
    header = True
    with open(path, "w", newline="") as handle:
        for device, folder, suffix in DEVICE_FILES:
            for start in range(0, len(kept[device]), MANIFEST_BLOCK):
                event = kept[device][start : start + MANIFEST_BLOCK]
                block = pd.DataFrame(
                    {
                        "device": device,
                        "file": [f"{folder}/event_{e:04d}.{suffix}" for e in event],
                        "time": times[device][event].round(3),
                        "label": np.asarray(SHAPES)[labels[event]],
                        "true_event": event,
                    }
                )
                block.to_csv(handle, index=False, header=header)
                header = False


def generate_demo_audio_image(
    out_dir: str | Path,
    events: int = 240,
    classes: int = 4,
    clock_offset_s: float = 3.7,
    jitter_s: float = 0.05,
    dropout: float = 0.05,
    image_size: int = 24,
    seed: int = 0,
    clip_seconds: float = CLIP_SECONDS,
) -> Path:
    """Write the demo recordings and ``manifest.csv`` into ``out_dir``; return the manifest."""
    if not 1 <= classes <= len(SHAPES):
        raise ConfigError(f"demo_data.audio_image: classes must be 1..{len(SHAPES)}, got {classes}")
    if events < 2:
        raise ConfigError(f"demo_data.audio_image: events must be >= 2, got {events}")
    if not 0.05 <= clip_seconds <= 10:
        raise ConfigError(
            f"demo_data.audio_image: clip_seconds must be 0.05..10, got {clip_seconds}"
        )
    if not 0 <= dropout < 0.5 or jitter_s < 0:
        raise ConfigError("demo_data.audio_image: need 0 <= dropout < 0.5 and jitter_s >= 0")
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 0xA1])
    true_times = 5.0 + np.cumsum(1.0 + rng.exponential(1.5, events))
    labels = rng.integers(0, classes, events)
    dropped = rng.permutation(events)[: 2 * round(dropout * events)]
    everything = np.arange(events)
    kept = {  # events in order, each side without its dropped ones
        "microphone": np.setdiff1d(everything, dropped[1::2]),
        "camera": np.setdiff1d(everything, dropped[::2]),
    }
    times = {
        "microphone": true_times + rng.normal(0.0, jitter_s, events),
        "camera": true_times - clock_offset_s + rng.normal(0.0, jitter_s, events),
    }
    with atomic_path(out_dir / "audio") as tmp:
        tmp.mkdir()
        for event in kept["microphone"]:
            clip_rng = np.random.default_rng([seed, 1, event])
            clip = tone(int(labels[event]), classes, clip_rng, clip_seconds)
            soundfile.write(tmp / f"event_{event:04d}.wav", clip, RECORDING_RATE, subtype="PCM_16")
    with atomic_path(out_dir / "images") as tmp:
        tmp.mkdir()
        for event in kept["camera"]:
            picture = shape(int(labels[event]), image_size, np.random.default_rng([seed, 2, event]))
            skio.imsave(tmp / f"event_{event:04d}.png", picture, check_contrast=False)
    path = out_dir / "manifest.csv"
    with atomic_path(path) as tmp:
        write_manifest(tmp, kept, times, labels)
    return path

"""Audio for Whisper: a typed sentence spoken by espeak-ng, or a WAV (recorded or uploaded), as 16 kHz mono.

Everything a person can get wrong comes back as `AudioError` with a sentence that says what to do: espeak-ng
missing, a file that is not a WAV, silence, a clip too long or too large for this server.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # what Whisper hears
WHISPER_SECONDS = 30.0  # one Whisper window; longer audio is cut to its first 30 s, with a notice
SILENCE_PEAK = 1e-3  # a clip whose loudest sample stays below this (of full scale) is treated as silence
VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc")  # espeak-ng English voices offered
DEFAULT_VOICE, DEFAULT_SPEED = "en-gb", 130  # clear enough for tiny.en (words per minute)
SPEEDS = (80, 400)  # espeak-ng's useful range of words per minute
MAX_SPOKEN_CHARS = 1_000  # longer text is cut before speaking: at 130 words/min this is well past 30 s anyway


class AudioError(ValueError):
    """Audio that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Audio:
    """Mono 16 kHz float32 samples in [-1, 1], and where they came from."""

    samples: np.ndarray  # (N,) float32
    source: str  # "espeak-ng en-gb 130 wpm", "upload name.wav", "microphone"
    notices: tuple[str, ...] = ()  # what was done to the clip (cut, resampled), as sentences

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def wav_bytes(self, start: float = 0.0, end: float | None = None) -> bytes:
        """The clip (or its span from `start` to `end` seconds) as a 16-bit PCM WAV, for playback on the page.
        A span is cut here because a media player's start and end times are whole seconds."""
        first = max(0, int(start * SAMPLE_RATE))
        last = len(self.samples) if end is None else min(len(self.samples), max(first + 1, int(end * SAMPLE_RATE)))
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes((np.clip(self.samples[first:last], -1, 1) * 32767).astype("<i2").tobytes())
        return buffer.getvalue()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED, max_seconds: float = WHISPER_SECONDS) -> Audio:
    """`text` spoken by espeak-ng with `voice` at `speed` words per minute, as 16 kHz audio."""
    if not text.strip():
        raise AudioError("There is no text to speak; type a sentence.")
    if not espeak_available():
        raise AudioError("espeak-ng is not installed, so the sentence cannot be spoken. Install it (Debian/Ubuntu: "
                         "`sudo apt-get install espeak-ng`; macOS: `brew install espeak-ng`), or record or upload a WAV.")
    if voice not in VOICES:
        raise AudioError(f"'{voice[:40]}' is not one of the voices offered ({', '.join(VOICES)}); pick one of those.")
    if not SPEEDS[0] <= speed <= SPEEDS[1]:
        raise AudioError(f"A speed of {speed} words per minute is outside {SPEEDS[0]}-{SPEEDS[1]}; pick one inside.")
    notices = []
    if len(text) > MAX_SPOKEN_CHARS:
        text = text[:MAX_SPOKEN_CHARS]
        notices.append(f"Only the first {MAX_SPOKEN_CHARS:,} characters of the text are spoken.")
    with tempfile.TemporaryDirectory(prefix="espeak-") as scratch:
        path = Path(scratch) / "speech.wav"
        # the text goes in on stdin, so nothing in it is read as an option
        result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), "--stdin"],
                                input=text.encode("utf-8"), capture_output=True, timeout=60)
        if result.returncode != 0 or not path.exists():
            raise AudioError(f"espeak-ng could not speak the text: {result.stderr.decode(errors='replace')[:200]}")
        clip = read_wav(path.read_bytes(), f"espeak-ng {voice} {speed} wpm", max_seconds=max_seconds)
    return Audio(clip.samples, clip.source, (*notices, *clip.notices))


def read_wav(data: bytes, source: str, max_bytes: int | None = None, max_seconds: float = WHISPER_SECONDS) -> Audio:
    """A PCM WAV file's bytes as 16 kHz mono audio, cut to `max_seconds` (with a notice), silence refused."""
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError(f"The file is {len(data) / 1e6:.1f} MB; this server takes WAV files up to "
                         f"{max_bytes / 1e6:.1f} MB. Cut it shorter, or run the explorer on your own machine.")
    try:
        with wave.open(io.BytesIO(data), "rb") as clip:
            channels, width, rate, frames = clip.getnchannels(), clip.getsampwidth(), clip.getframerate(), clip.getnframes()
            raw = clip.readframes(frames)
    except (wave.Error, EOFError, ValueError) as error:
        raise AudioError(f"This file cannot be read as a WAV ({error}). Give a PCM WAV file (16-bit is usual), "
                         "or record with the microphone.") from None
    if width not in (1, 2, 3, 4) or rate <= 0 or channels <= 0:
        raise AudioError("This WAV has a sample format the reader lacks; save it as 16-bit PCM.")
    usable = len(raw) // (width * channels) * width * channels
    samples = _pcm_to_float(raw[:usable], width).reshape(-1, channels).mean(axis=1)  # (N,) mono
    if len(samples) == 0:
        raise AudioError("The WAV holds no sound at all (zero samples); record or choose another clip.")
    notices = []
    if len(samples) > max_seconds * rate:
        notices.append(f"The clip lasts {len(samples) / rate:.1f} s; Whisper hears one {WHISPER_SECONDS:.0f} s window "
                       f"at a time, so only its first {max_seconds:.0f} s are used.")
        samples = samples[: int(max_seconds * rate)]
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, SAMPLE_RATE)
    if np.max(np.abs(samples)) < SILENCE_PEAK:
        raise AudioError("The clip is silent (its loudest sample is below 0.1% of full scale); there is nothing for "
                         "Whisper to hear. Speak louder, or check the microphone.")
    return Audio(samples.astype(np.float32), source, tuple(notices))


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    """Interleaved PCM bytes as float32 in [-1, 1]: 8-bit unsigned, 16/24/32-bit signed little-endian."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    if width == 3:  # 24-bit: widen each sample to 32 bits
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(bytes3), 4), np.uint8)
        wide[:, 1:] = bytes3
        return wide.view("<i4").reshape(-1).astype(np.float32) / 2**31
    kind = {2: "<i2", 4: "<i4"}[width]
    return np.frombuffer(raw, kind).astype(np.float32) / float(2 ** (8 * width - 1))


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(N,) -> (N * target / rate,): band-limited resampling in the frequency domain (the ends are padded with
    silence first, so the transform's wrap-around does not smear the end of the clip into its start)."""
    pad = rate // 10  # 0.1 s
    padded = np.concatenate([np.zeros(pad), samples, np.zeros(pad)])  # (N + 2 pad,)
    spectrum = np.fft.rfft(padded)
    length = int(round(len(padded) * target / rate))
    keep = min(len(spectrum), length // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n=length) * (length / len(padded))  # (length,)
    start = int(round(pad * target / rate))
    return out[start : start + int(round(len(samples) * target / rate))]

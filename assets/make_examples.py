"""Rebuild the playground's example prompts (small 16 kHz mono 16-bit WAVs, < 1 MB in all).

    python assets/make_examples.py        # needs espeak-ng, fluidsynth and fluid-soundfont-gm (Debian)

- digit_seven.wav: "seven" spoken by espeak-ng (en-us), silence-trimmed, ~0.6 s.
- digit_three.wav: "three" by espeak-ng (en-gb, lower pitch), ~0.6 s.
- piano_phrase.wav: a C-major phrase written here as a MIDI file and rendered by fluidsynth with the
  FluidR3_GM soundfont (MIT licence), ~3 s.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _finish(audio: np.ndarray, sr: int, out: Path, peak: float = 0.5) -> None:
    """Mono, 16 kHz, trimmed, peak-scaled, 10 ms fades; written as 16-bit PCM."""
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = librosa.resample(audio.astype(np.float32), orig_sr=sr, target_sr=SAMPLE_RATE)
    audio, _ = librosa.effects.trim(audio, top_db=40)
    audio = audio / max(1e-6, float(np.abs(audio).max())) * peak
    fade = int(0.01 * SAMPLE_RATE)
    audio[:fade] *= np.linspace(0, 1, fade)
    audio[-fade:] *= np.linspace(1, 0, fade)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    print(f"{out.name}: {len(audio) / SAMPLE_RATE:.2f} s, {out.stat().st_size / 1024:.0f} KiB")


def speak(text: str, voice: str, pitch: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "150", "-w", str(wav), text],
                       check=True)
        audio, sr = sf.read(wav, dtype="float32")
    _finish(audio, sr, out)


def _midi(notes: list[tuple[int, float, float]], tempo_us: int = 500000, ppq: int = 480) -> bytes:
    """A type-0 MIDI file: piano (program 0), notes = (pitch, start beat, length in beats)."""
    events = []
    for pitch, start, length in notes:
        events.append((int(start * ppq), 0x90, pitch, 80))
        events.append((int((start + length) * ppq), 0x80, pitch, 0))
    events.sort(key=lambda e: (e[0], e[1] == 0x90))

    def vlq(n: int) -> bytes:
        out = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            out.append((n & 0x7F) | 0x80)
        return bytes(reversed(out))

    track = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big") + b"\x00\xc0\x00"
    now = 0
    for tick, status, pitch, vel in events:
        track += vlq(tick - now) + bytes([status, pitch, vel])
        now = tick
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ppq) + b"MTrk" + struct.pack(">I", len(track)) + track


def piano(out: Path) -> None:
    melody = [(60, 0, 0.5), (64, 0.5, 0.5), (67, 1, 0.5), (72, 1.5, 1), (71, 2.5, 0.5), (67, 3, 0.5),
              (69, 3.5, 0.5), (65, 4, 1.5)]
    chords = [(48, 0, 2), (52, 0, 2), (55, 0, 2), (53, 2, 2), (57, 2, 2), (60, 2, 2), (43, 4, 1.5)]
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "phrase.mid", Path(tmp) / "phrase.wav"
        mid.write_bytes(_midi(melody + chords, tempo_us=500000))
        subprocess.run(["fluidsynth", "-ni", "-g", "0.8", "-r", "44100", "-F", str(wav), str(SOUNDFONT),
                        str(mid)], check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
    _finish(audio, sr, out, peak=0.6)


def main() -> int:
    missing = [t for t in ("espeak-ng", "fluidsynth") if shutil.which(t) is None]
    if missing or not SOUNDFONT.is_file():
        print(f"error: need espeak-ng, fluidsynth and {SOUNDFONT} "
              "(apt-get install espeak-ng fluidsynth fluid-soundfont-gm)", file=sys.stderr)
        return 2
    speak("seven", "en-us", 50, HERE / "digit_seven.wav")
    speak("three", "en-gb", 30, HERE / "digit_three.wav")
    piano(HERE / "piano_phrase.wav")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``piano-synth``: an offline stand-in for YouTubeMix / Beethoven piano (16 kHz mono, 8.192 s chunks).

Scores come from music21's bundled corpus (Bach, Beethoven, Mozart, Haydn, Schumann, Chopin, Joplin,
Palestrina, Monteverdi, ... all public domain, shipped inside the ``music21`` wheel, no network needed).
Each piece: parse -> MIDI (repeats expanded; pieces whose repeat marks music21 cannot expand are played
without repeats) -> every program change set to Acoustic Grand Piano (program 0), tempo scaled by
U(0.85, 1.15), transposed by an integer in [-3, 3] semitones -> ``fluidsynth -ni -F out.wav -r 16000``
with ``FluidR3_GM.sf2`` (Debian ``fluid-soundfont-gm``, MIT licensed) -> mono, silence trimmed, peak
U(0.5, 0.9) -> cut into chunks of 131072 samples (8.192 s). A tail of at least half a chunk is padded with
silence, a shorter tail is dropped; chunks quieter than -50 dBFS RMS are dropped.

Pieces are visited in a seeded order that round-robins over composers (so a few hours already span many
composers) until the target duration is reached. Split by piece: position k in that order goes to valid
when k % 50 in {1, 17, 34}, test when k % 50 in {2, 18, 35}, else train (88/6/6, and even a tiny build has
a valid and a test piece). Tempo/transposition/level depend only on (seed, piece), so builds are
deterministic for a given seed, music21 version and fluidsynth version.

Layout: ``<out>/<split>/<piece>_<chunk>.wav`` and ``<out>/manifest.csv`` with columns :data:`FIELDS`;
``<out>/.state/<piece>.json`` records finished pieces so a re-run skips them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import common

log = logging.getLogger(__name__)

CHUNK = 131072  # 8.192 s at 16 kHz
FIELDS = ("file", "split", "piece", "chunk", "duration", "source", "soundfont", "tempo", "transpose")
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
COMPOSERS = ("bach", "beethoven", "mozart", "haydn", "schumann_robert", "schumann_clara", "chopin",
             "joplin", "schubert", "handel", "corelli", "cpebach", "beach", "weber", "monteverdi",
             "palestrina", "trecento")
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn")
# Whole multi-movement quartets in one file: music21's MIDI export (stripTies) takes many minutes on them;
# their movements are not in the corpus separately, so they are simply left out.
EXCLUDE = frozenset({"beethoven/opus18no3", "beethoven/opus18no4", "beethoven/opus18no5", "beethoven/opus74",
                     "beethoven/opus132", "beethoven/opus133"})
PIECE_TIMEOUT = 300  # seconds per piece; a score that takes longer is recorded as failed and skipped
SILENCE_DBFS = -50.0
DEFAULT_HOURS = 2.0
SMALL_HOURS = 2.5 / 60
SMALL_MAX_CHUNKS = 3


@dataclass(frozen=True)
class Piece:
    """One corpus piece to render; ``position`` is its place in the seeded visiting order."""

    piece: str  # e.g. "bach-bwv66.6"
    path: str  # absolute path inside the music21 corpus
    position: int
    split: str
    tempo: float
    transpose: int
    peak: float
    max_chunks: int | None


def split_for_position(k: int) -> str:
    r = k % 50
    return "valid" if r in (1, 17, 34) else "test" if r in (2, 18, 35) else "train"


def corpus_pieces(composers: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """{composer: sorted [(piece id, path)]} of renderable scores in music21's corpus (one file per piece:
    where a piece exists in two formats, MusicXML wins over Humdrum)."""
    from music21 import corpus

    best: dict[str, tuple[int, str, str]] = {}
    for p in map(str, corpus.getPaths()):
        rel = p.replace(os.sep, "/").split("/corpus/", 1)[-1]
        stem, ext = os.path.splitext(rel)
        composer = rel.split("/", 1)[0]
        if composer in composers and ext.lower() in SCORE_EXTENSIONS and stem not in EXCLUDE:
            piece = re.sub(r"[^A-Za-z0-9.-]+", "-", stem.replace("/", "-")).strip("-")
            rank = SCORE_EXTENSIONS.index(ext.lower())
            if piece not in best or rank < best[piece][0]:
                best[piece] = (rank, composer, p)
    out: dict[str, list[tuple[str, str]]] = {}
    for piece, (_, composer, p) in best.items():
        out.setdefault(composer, []).append((piece, p))
    return {c: sorted(v) for c, v in out.items()}


def plan(seed: int, composers: tuple[str, ...], max_chunks: int | None) -> list[Piece]:
    """All candidate pieces in visiting order: seeded shuffle per composer, round-robin across composers."""
    by_composer = corpus_pieces(composers)
    rng = np.random.default_rng(common.seed_for(seed, 7))
    queues = []
    for c in sorted(by_composer):
        items = list(by_composer[c])
        rng.shuffle(items)
        queues.append(items)
    rng.shuffle(queues)
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    pieces = []
    for k, (piece, path) in enumerate(order):
        prng = np.random.default_rng(common.seed_for(seed, zlib.crc32(piece.encode())))
        pieces.append(Piece(piece, path, k, split_for_position(k),
                            tempo=round(float(prng.uniform(0.85, 1.15)), 3),
                            transpose=int(prng.integers(-3, 4)), peak=float(prng.uniform(0.5, 0.9)),
                            max_chunks=max_chunks))
    return pieces


# ------------------------------------------------------------------------------------------- rendering
def score_to_midi(path: str, tempo: float, transpose: int, midi_path: str) -> None:
    """Parse a corpus score and write a piano-only, tempo-scaled, transposed MIDI file."""
    from music21 import bar, corpus, midi, repeat, spanner, stream

    score = corpus.parse(path)
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    try:
        mf = midi.translate.streamToMidiFile(score)
    except Exception:  # noqa: BLE001 - badly formed repeats: play it straight through
        for m in score.recurse().getElementsByClass(stream.Measure):
            if isinstance(m.leftBarline, bar.Repeat):
                m.leftBarline = None
            if isinstance(m.rightBarline, bar.Repeat):
                m.rightBarline = None
        for el in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
            for site in list(el.sites.get()):
                if isinstance(site, stream.Stream) and el in site:
                    site.remove(el)
        mf = midi.translate.streamToMidiFile(score)
    for track in mf.tracks:
        for e in track.events:
            if e.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE:
                e.data = 0
            elif e.type in (midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF):
                e.pitch = int(np.clip(e.pitch + transpose, 21, 108))
            elif e.type == midi.MetaEvents.SET_TEMPO:
                usec = int.from_bytes(e.data, "big")
                e.data = max(1, min(round(usec / tempo), 2**24 - 1)).to_bytes(3, "big")
    mf.open(midi_path, "wb")
    try:
        mf.write()
    finally:
        mf.close()


def render(midi_path: str, wav_path: str, soundfont: str) -> np.ndarray:
    """fluidsynth fast render -> mono (n,) float32 at 16 kHz."""
    import soundfile as sf

    cmd = ["fluidsynth", "-ni", "-q", "-F", wav_path, "-T", "wav", "-O", "float",
           "-r", str(common.SAMPLE_RATE), "-g", "0.4", "-o", "synth.cpu-cores=1", soundfont, midi_path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0 or not os.path.exists(wav_path):
        raise RuntimeError(f"fluidsynth failed (rc={r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
    audio, sr = sf.read(wav_path, dtype="float32", always_2d=True)
    return common.resample(common.to_mono(audio), sr, common.SAMPLE_RATE)


def chunk(audio: np.ndarray, peak: float, max_chunks: int | None) -> list[tuple[int, np.ndarray]]:
    """Whole piece (n,) -> [(chunk index, (CHUNK,) float32)] after trim, peak normalisation, silence drop."""
    import librosa

    audio, _ = librosa.effects.trim(audio, top_db=60)
    if audio.size == 0 or np.abs(audio).max() < 1e-5:
        return []
    audio = audio * (peak / np.abs(audio).max())
    n_full, tail = divmod(audio.size, CHUNK)
    if tail >= CHUNK // 2:
        audio = np.concatenate([audio, np.zeros(CHUNK - tail, np.float32)])
        n_full += 1
    chunks = []
    for i in range(n_full):
        c = audio[i * CHUNK:(i + 1) * CHUNK]
        if 20 * np.log10(np.sqrt(np.mean(c.astype(np.float64) ** 2)) + 1e-12) >= SILENCE_DBFS:
            chunks.append((i, c.astype(np.float32)))
        if max_chunks is not None and len(chunks) >= max_chunks:
            break
    return chunks


def state_path(out: Path, piece: str) -> Path:
    return out / ".state" / f"{piece}.json"


def load_state(out: Path, p: Piece) -> dict | None:
    """The saved result for ``p`` if it was built with the same settings and all its files exist."""
    try:
        st = json.loads(state_path(out, p.piece).read_text())
    except (OSError, ValueError):
        return None
    same = (st.get("split"), st.get("tempo"), st.get("transpose"), st.get("max_chunks")) == (
        p.split, p.tempo, p.transpose, p.max_chunks)
    if not same or not all((out / r["file"]).exists() for r in st.get("rows", [])):
        return None
    return st


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Raise TimeoutError in this (main) thread after ``seconds`` (SIGALRM; no-op where unavailable)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"piece took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def build_piece(job: tuple[Piece, str, str]) -> dict:
    """Worker: render one piece unless already done. Returns its state {status, rows, seconds, error}."""
    p, out, soundfont = job
    out = Path(out)
    st = load_state(out, p)
    if st is not None:
        return st
    st = {"piece": p.piece, "split": p.split, "tempo": p.tempo, "transpose": p.transpose,
          "max_chunks": p.max_chunks, "status": "ok", "error": None, "rows": []}
    try:
        with tempfile.TemporaryDirectory(prefix="pianosynth-") as tmp, _time_limit(PIECE_TIMEOUT):
            score_to_midi(p.path, p.tempo, p.transpose, os.path.join(tmp, "in.mid"))
            audio = render(os.path.join(tmp, "in.mid"), os.path.join(tmp, "out.wav"), soundfont)
        for i, c in chunk(audio, p.peak, p.max_chunks):
            rel = f"{p.split}/{p.piece}_{i:03d}.wav"
            common.write_wav_atomic(out / rel, c)
            st["rows"].append({"file": rel, "split": p.split, "piece": p.piece, "chunk": i,
                               "duration": CHUNK / common.SAMPLE_RATE, "source": "music21+fluidsynth",
                               "soundfont": Path(soundfont).name, "tempo": p.tempo, "transpose": p.transpose})
    except Exception as e:  # noqa: BLE001 - a score music21 cannot handle is skipped, not fatal
        st.update(status="failed", error=f"{type(e).__name__}: {e}"[:500], rows=[])
    common.write_json_atomic(state_path(out, p.piece), st)
    return st


# ----------------------------------------------------------------------------------------------- build
def check_tools(soundfont: str) -> dict[str, str]:
    common.require_tool("fluidsynth", "fluidsynth")
    common.require_file(soundfont, "General MIDI soundfont", "fluid-soundfont-gm")
    try:
        import music21
    except ImportError:
        raise common.MissingToolError(
            "music21 not installed: install it with `pip install music21`") from None
    return {"fluidsynth": common.tool_version(["fluidsynth", "--version"]), "music21": music21.__version__}


def build(out: str | os.PathLike, hours: float | None = None, seed: int = 0, workers: int = 2,
          small: bool = False, soundfont: str = SOUNDFONT, max_chunks: int | None = None,
          composers: tuple[str, ...] | None = None, progress: bool = True) -> dict:
    """Build (or finish building) piano-synth in ``out``; returns the dataset.json content as a dict."""
    versions = check_tools(soundfont)
    out = Path(out)
    common.check_seed(out, seed)
    out.mkdir(parents=True, exist_ok=True)
    common.remove_stale_temp_files(out)
    hours = hours if hours is not None else (SMALL_HOURS if small else DEFAULT_HOURS)
    max_chunks = max_chunks if max_chunks is not None else (SMALL_MAX_CHUNKS if small else None)
    composers = composers or (("bach",) if small else COMPOSERS)
    pieces = plan(seed, composers, max_chunks)
    target = hours * 3600.0
    rows, used, failed, total = [], set(), 0, 0.0

    def results():
        done = 0
        for p in pieces:  # the finished prefix of a previous run: no workers needed
            st = load_state(out, p)
            if st is None:
                break
            done += 1
            yield p, st
        rest = pieces[done:]
        if rest:
            common.warm_up_librosa()
            yield from zip(rest, common.map_ordered(build_piece, [(p, str(out), soundfont) for p in rest],
                                                    workers, "piano-synth", window=2 * max(workers, 1),
                                                    progress=False), strict=False)

    gen = results()
    bar = tqdm(total=round(target), desc="piano-synth", unit="s", disable=not progress, file=sys.stderr)
    try:
        for p, st in gen:
            used.add(p.piece)
            if st["status"] != "ok":
                failed += 1
                log.warning("skipped %s: %s", p.piece, st["error"])
                continue
            rows.extend(st["rows"])
            secs = sum(float(r["duration"]) for r in st["rows"])
            total += secs
            bar.set_postfix(pieces=len(used), refresh=False)
            bar.update(min(round(secs), bar.total - bar.n))
            if total >= target:
                break
    finally:
        gen.close()  # cancels queued pieces; ones already running finish and are pruned below
        bar.close()
    if total < target:
        log.warning("corpus exhausted: %.2f h of %.2f h requested", total / 3600, hours)
    for f in (out / ".state").glob("*.json"):
        if f.stem not in used:
            f.unlink()
    common.prune_unlisted(out, {r["file"] for r in rows})
    common.write_manifest(out, rows, FIELDS)
    options = {"hours": hours, "seed": seed, "small": small, "max_chunks": max_chunks,
               "composers": list(composers), "pieces": len(used) - failed, "failed_pieces": failed}
    versions.update(common.python_versions("librosa", "soundfile", "numpy"))
    command = f"python -m sashimi_core.data build piano-synth --out {out} --seed {seed} --soundfont {soundfont}"
    if small:
        command += " --small"
    command += f" --hours {hours:g}" + (f" --max-chunks-per-piece {max_chunks}" if max_chunks else "")
    common.write_dataset_json(out, "piano-synth", CHUNK, rows, versions, options, command)
    return json.loads((out / common.DATASET_JSON).read_text())

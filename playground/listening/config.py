"""What a listening test is made of: rating scales, the test specification a teacher fills in, and the
settings of one app instance (where tests live, the teacher password, public-mode limits).

Scales follow the SaShiMi paper's Mechanical Turk protocol: music clips are rated for *fidelity* and
*musicality*, speech (SC09 digits) for *quality* and *intelligibility*, each on a 1-5 absolute category
rating scale with labelled anchors (ITU-T P.800: 1 Bad … 5 Excellent).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

ANCHORS = ("Bad", "Poor", "Fair", "Good", "Excellent")
ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KINDS = ("music", "speech", "custom")
ANCHOR_KINDS = ("none", "noise", "temperature")
ECHO_CHARS = 32  # user input quoted back in an error message is cut to this many characters


class ListeningError(ValueError):
    """A request the listening test refuses; the message is meant for the user."""


def echo(value, limit: int = ECHO_CHARS) -> str:
    """repr(value) for an error message, cut to `limit` characters (user input is never echoed in full)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Scale:
    """One 1-5 rating scale: id (column name), label, the question raters see, and the five anchor labels."""

    id: str
    label: str
    question: str
    anchors: tuple[str, ...] = ANCHORS

    def check(self) -> None:
        if not ID_RE.match(self.id):
            raise ListeningError(f"Scale id {self.id!r} must be lower-case letters, digits or _ (e.g. 'quality').")
        if not self.label.strip() or not self.question.strip():
            raise ListeningError(f"Scale {self.id!r} needs a label and a question.")
        if len(self.anchors) != 5 or not all(str(a).strip() for a in self.anchors):
            raise ListeningError(f"Scale {self.id!r} needs five anchor labels (for 1 to 5), got {list(self.anchors)}.")

    @classmethod
    def from_dict(cls, d: dict) -> Scale:
        return cls(str(d["id"]), str(d["label"]), str(d["question"]), tuple(str(a) for a in d.get("anchors", ANCHORS)))


SCALE_PRESETS: dict[str, tuple[Scale, ...]] = {
    "music": (
        Scale("fidelity", "Fidelity", "How clean is the audio? Ignore the music itself: judge noise, crackles, "
              "distortion and other artefacts."),
        Scale("musicality", "Musicality", "How musical is it? Judge melody, harmony and rhythm, and whether it "
              "sounds like a coherent piece."),
    ),
    "speech": (
        Scale("quality", "Quality", "How good is the audio quality? Judge noise, distortion and how natural the "
              "voice sounds."),
        Scale("intelligibility", "Intelligibility", "How easy is it to tell which word (digit) is spoken?",
              ("Cannot tell", "Hard", "Some effort", "Easy", "Obvious")),
    ),
}


@dataclass
class TestSpec:
    """Everything a teacher chooses when building a test (stored verbatim in the manifest)."""

    __test__ = False  # not a pytest test class

    title: str = "Listening test"
    kind: str = "music"  # music | speech | custom: picks the scale preset (custom: `scales`)
    models: list[str] = field(default_factory=list)  # checkpoint names (list_checkpoints) or folders
    real_dir: str | None = None  # folder of audio files: the "Real data" reference system
    anchor: str = "none"  # none | noise (white noise) | temperature (first model at anchor_temperature)
    anchor_temperature: float = 2.0
    clips_per_system: int = 6
    clip_seconds: float = 2.0  # generated (or real) audio per clip, after the prompt
    prompt_file: str | None = None  # optional prompt: every model continues it (clip = prompt + continuation)
    prompt_seconds: float = 1.0  # prompt length used (from its start)
    temperature: float = 1.0  # sampling temperature of the model systems
    top_p: float = 1.0
    scales: list[Scale] = field(default_factory=list)  # custom scales (kind "custom"); else the preset's
    gold_noise: int = 0  # gold clips of white noise: must be rated <= 2 on the first scale
    gold_real: int = 0  # gold clips of real data: must be rated >= 3 on the first scale
    gold_tolerance: int = 0  # a rater failing more gold checks than this is excluded from the results
    seed: int = 0
    quantize_real: bool = True  # pass real clips through the models' 8-bit quantiser (fair comparison)
    normalize: bool = True  # every clip at -20 dBFS RMS; a soft limiter above -3 dBFS keeps peaks below -0.1 dBFS
    min_listen_fraction: float = 0.8  # a rating is refused until this fraction of the clip could be heard
    instructions: str = ""  # shown to raters above the first clip
    max_raters: int = 0  # raters who may join (0: the app's limit, Limits.max_raters)
    joins_per_host: int = 0  # new raters per client address and hour (0: the default, Limits.joins_per_host)

    def resolved_scales(self) -> list[Scale]:
        """The scales raters see: the preset of `kind`, or the custom ones."""
        if self.kind == "custom":
            return list(self.scales)
        return list(SCALE_PRESETS[self.kind])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = [asdict(s) | {"anchors": list(s.anchors)} for s in self.resolved_scales()]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TestSpec:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ListeningError(f"Unknown test settings {unknown}; known: {sorted(names)}.")
        d = dict(d)
        d["scales"] = [s if isinstance(s, Scale) else Scale.from_dict(s) for s in d.get("scales") or []]
        return cls(**d)

    def with_limits(self, limits: Limits | None = None) -> TestSpec:
        """This spec with max_raters and joins_per_host resolved (0 -> the limits' values)."""
        limits = limits or Limits()
        return replace(self, max_raters=self.max_raters or limits.max_raters,
                       joins_per_host=self.joins_per_host or limits.joins_per_host)

    def n_systems(self) -> int:
        return len(self.models) + bool(self.real_dir) + (self.anchor != "none")

    def n_clips(self) -> int:
        return self.n_systems() * self.clips_per_system + self.gold_noise + self.gold_real

    def check(self, limits: Limits | None = None) -> None:
        """Raise ListeningError with a plain sentence for anything a teacher got wrong."""
        limits = limits or Limits()
        if not self.title.strip():
            raise ListeningError("Give the test a title.")
        if self.kind not in KINDS:
            raise ListeningError(f"Kind must be one of {KINDS}, got {self.kind!r}.")
        if self.anchor not in ANCHOR_KINDS:
            raise ListeningError(f"Anchor must be one of {ANCHOR_KINDS}, got {self.anchor!r}.")
        if len(set(self.models)) != len(self.models):
            raise ListeningError("A model is selected twice.")
        if self.n_systems() == 0:
            raise ListeningError("Pick at least one system: a model, the real-data folder or an anchor.")
        if self.anchor == "temperature" and not self.models:
            raise ListeningError("The temperature anchor samples the first selected model: select a model.")
        if self.gold_real and not self.real_dir:
            raise ListeningError("Real-data gold clips need a real-data folder.")
        if not 1 <= self.clips_per_system <= limits.max_clips_per_system:
            raise ListeningError(f"Clips per system must be 1 to {limits.max_clips_per_system}, "
                                 f"got {self.clips_per_system}.")
        if not (math.isfinite(self.clip_seconds) and 0.05 <= self.clip_seconds <= limits.max_clip_seconds):
            raise ListeningError(f"Clip length must be 0.05 to {limits.max_clip_seconds:g} s, got {self.clip_seconds}.")
        if self.prompt_file and not 0.05 <= self.prompt_seconds <= limits.max_clip_seconds:
            raise ListeningError(f"Prompt length must be 0.05 to {limits.max_clip_seconds:g} s.")
        if not 0.0 <= self.temperature <= 5.0 or not 0.0 < self.anchor_temperature <= 10.0:
            raise ListeningError("Temperature must be in [0, 5] and the anchor temperature in (0, 10].")
        if not 0.0 < self.top_p <= 1.0:
            raise ListeningError(f"Top-p must be in (0, 1], got {self.top_p}.")
        if min(self.gold_noise, self.gold_real, self.gold_tolerance) < 0 or self.gold_noise + self.gold_real > 10:
            raise ListeningError("Gold clips: 0 to 10 in all, and a non-negative tolerance.")
        if self.n_clips() > limits.max_clips:
            raise ListeningError(f"This test would have {self.n_clips()} clips; the limit here is {limits.max_clips}.")
        if not 0.0 <= self.min_listen_fraction <= 1.0:
            raise ListeningError("The minimum listening fraction must be in [0, 1].")
        if not 0 <= self.max_raters <= limits.max_raters:
            raise ListeningError(f"Maximum raters must be 1 to {limits.max_raters} (or 0 for the default, "
                                 f"{limits.max_raters}), got {self.max_raters}.")
        if not 0 <= self.joins_per_host <= limits.max_raters:
            raise ListeningError(f"New raters per address and hour must be 1 to {limits.max_raters} (or 0 for "
                                 f"the default, {limits.joins_per_host}), got {self.joins_per_host}.")
        scales = self.resolved_scales()
        if not 1 <= len(scales) <= MAX_SCALES:
            raise ListeningError(f"A test needs 1 to {MAX_SCALES} scales, got {len(scales)}.")
        for s in scales:
            s.check()
        if len({s.id for s in scales}) != len(scales):
            raise ListeningError("Two scales share an id.")


MAX_SCALES = 4  # the rater page has this many scale slots (RaterHandlers.rate takes score_1..score_4)


def scales_from_table(rows) -> list[Scale]:
    """Rows [id, label, question, "anchor1, ..., anchor5"] (a table the teacher filled in) -> Scales.
    Empty rows are skipped; empty anchors mean Bad/Poor/Fair/Good/Excellent."""
    rows = rows.values.tolist() if hasattr(rows, "values") else (rows or [])
    out = []
    for row in rows:
        cells = [str(c if c is not None else "").strip() for c in [*row, "", "", "", ""]][:4]
        if not any(cells):
            continue
        anchors = tuple(a.strip() for a in cells[3].split(",")) if cells[3] else ANCHORS
        out.append(Scale(cells[0], cells[1], cells[2], anchors))
    if not out:
        raise ListeningError("Add at least one custom scale (id, label, question).")
    return out


@dataclass(frozen=True)
class Limits:
    """Size caps for building tests (tighter in public mode). max_raters: the most raters one test may
    have (also the default); joins_per_host: default of how many new raters one client address may add
    to a test per hour (a teacher may raise it up to max_raters, e.g. for a class behind one NAT address)."""

    max_clips_per_system: int = 50
    max_clip_seconds: float = 30.0
    max_clips: int = 400
    max_raters: int = 200
    joins_per_host: int = 5


PUBLIC_LIMITS = Limits(max_clips_per_system=10, max_clip_seconds=4.0, max_clips=60, max_raters=100,
                       joins_per_host=3)


def read_password_file(path) -> str:
    """The teacher password: the first line of a file (so it never shows in `ps`, as a command-line
    argument would)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ListeningError(f"Cannot read the teacher password file {path}: {exc}") from exc
    if not lines or not lines[0]:
        raise ListeningError(f"{path}: the first line must hold the teacher password.")
    return lines[0]


def default_root() -> Path:
    """Folder holding one sub-folder per test: env SASHIMI_LISTENING_DIR, default ./listening_tests."""
    return Path(os.environ.get("SASHIMI_LISTENING_DIR", "listening_tests"))


@dataclass(frozen=True)
class ListenSettings:
    """Settings of the listening feature in one app instance.

    password: the teacher password (None: teacher tools answer only on this computer, i.e. requests from
    127.0.0.1 / ::1, and not at all in public mode). model_roots: (folder, shipped) pairs for
    ``sashimi_core.list_checkpoints`` (None: its defaults)."""

    root: Path = field(default_factory=default_root)
    password: str | None = None
    public: bool = False
    data_dir: Path = Path("data")
    model_roots: tuple[tuple[Path, bool], ...] | None = None
    limits: Limits = Limits()

    @classmethod
    def create(cls, playground=None, *, password: str | None = None, root=None, public: bool | None = None,
               **overrides) -> ListenSettings:
        """From the playground's services.Settings (folders, public flag) and the environment:
        SASHIMI_TEACHER_PASSWORD, SASHIMI_LISTENING_DIR, SASHIMI_DATA."""
        password = password if password is not None else os.environ.get("SASHIMI_TEACHER_PASSWORD") or None
        if public is None:
            public = bool(getattr(playground, "public", False) or os.environ.get("SPACE_ID"))
        base = dict(root=Path(root) if root is not None else default_root(), password=password, public=public,
                    limits=PUBLIC_LIMITS if public else Limits())
        if playground is not None:
            base.update(data_dir=Path(playground.data_dir),
                        model_roots=((Path(playground.checkpoints_dir), True), (Path(playground.runs_dir), False)))
        else:
            base.update(data_dir=Path(os.environ.get("SASHIMI_DATA", "data")))
        base.update(overrides)
        return cls(**base)

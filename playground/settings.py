"""One app instance's limits and folders (:class:`Settings`), and :class:`ServiceError`, the refusal every
service raises with a message meant for the user."""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@cache
def process_temp_dir(purpose: str) -> Path:
    """A private temp folder (mode 0700) of this process for `purpose`, removed when the process exits:
    two app instances on one machine never share (or clean) each other's files."""
    folder = Path(tempfile.mkdtemp(prefix=f"sashimi-{purpose}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class ServiceError(ValueError):
    """A request the playground refuses; the message says why and what to do instead."""


@dataclass(frozen=True)
class Settings:
    """Limits and folders for one app instance. ``Settings.create(public=True)`` is the Space profile."""

    public: bool = False
    max_seconds: float = 30.0  # longest continuation a request may ask for
    max_open_seconds: float = 300.0  # bound of an "until I press Stop" request
    max_samples: int = 8  # samples per request
    max_prompt_seconds: float = 60.0  # prompt length after trimming
    max_upload_mb: int = 200  # Gradio rejects bigger uploads before they reach us
    concurrency: int = 2  # generation requests running at once (the rest wait in the queue)
    queue_size: int | None = None  # waiting requests before new ones are refused
    max_wall_s: float | None = None  # generation stops (with partial results) after this long
    training: bool = True  # Train tab may start processes
    max_train_steps: int | None = None  # cap on --steps when training is limited
    train_presets: tuple[str, ...] | None = None  # allowed presets (None = all)
    checkpoints_dir: Path = ROOT / "checkpoints"  # shipped models (never deleted)
    runs_dir: Path = Path("runs")  # user runs (env SASHIMI_RUNS)
    data_dir: Path = Path("data")  # data sets (env SASHIMI_DATA)
    output_dir: Path = field(default_factory=lambda: process_temp_dir("playground"))  # results, cleaned
    output_max_age_s: float = 3600.0

    @classmethod
    def create(cls, public: bool | None = None, **overrides) -> Settings:
        """Settings from the environment: public when ``public`` or env SPACE_ID is set; SASHIMI_RUNS,
        SASHIMI_DATA, SASHIMI_CHECKPOINTS pick the folders; SASHIMI_PUBLIC_TRAINING=1 allows limited training
        in public mode."""
        public = bool(os.environ.get("SPACE_ID")) if public is None else public
        base = dict(runs_dir=Path(os.environ.get("SASHIMI_RUNS", "runs")),
                    data_dir=Path(os.environ.get("SASHIMI_DATA", "data")),
                    checkpoints_dir=Path(os.environ.get("SASHIMI_CHECKPOINTS", ROOT / "checkpoints")))
        if public:
            limited = os.environ.get("SASHIMI_PUBLIC_TRAINING") == "1"
            base.update(public=True, max_seconds=2.0, max_open_seconds=10.0, max_samples=2, max_prompt_seconds=10.0,
                        max_upload_mb=5,
                        concurrency=1, queue_size=16, max_wall_s=300.0, training=limited,
                        max_train_steps=200 if limited else None,
                        train_presets=("sashimi-tiny",) if limited else None, output_max_age_s=1800.0)
        base.update(overrides)
        return cls(**base)

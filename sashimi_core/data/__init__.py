"""Data sets: offline builders (``python -m sashimi_core.data build ...``) and torch loaders.

- :mod:`.sc09_synth`: spoken digits from espeak-ng/flite, a stand-in for SC09.
- :mod:`.piano_synth`: music21 corpus rendered by fluidsynth, a stand-in for YouTubeMix/Beethoven.
- :mod:`.loaders`: :class:`AudioClipDataset`, :func:`detect_layout`, :func:`resolve_dataset`.

The loader names are imported lazily so the builders (and their worker processes) do not import torch.
"""
from __future__ import annotations

__all__ = ["AudioClipDataset", "detect_layout", "resolve_dataset", "split_files", "summarize", "LAYOUTS"]


def __getattr__(name: str):
    if name in __all__:
        from . import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

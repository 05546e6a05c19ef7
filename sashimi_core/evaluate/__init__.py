"""Measuring models: test-set NLL (``python -m sashimi_core.evaluate``), the quality proxies of generated audio,
the speech-digit classifier and its metrics (IS, mIS, AM, FID), and spectrogram pictures. Imports
``generation``, ``checkpoint``, ``data``, ``nn`` and ``ops``.

Command lines: ``python -m sashimi_core.evaluate`` (NLL), ``python -m sashimi_core.evaluate.audio_metrics``,
``python -m sashimi_core.evaluate.classifier``."""
from sashimi_core.evaluate.nll import evaluate, main

__all__ = ["evaluate", "main"]

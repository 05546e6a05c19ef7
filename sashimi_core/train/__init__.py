"""Training: the trainer (``python -m sashimi_core.train``; ``train(TrainConfig(...))``) and the resumable run
folder it writes (``run_state``). The top layer: imports ``evaluate``, ``generation``, ``checkpoint``, ``data``,
``nn`` and ``ops``."""
from sashimi_core.train.trainer import TrainConfig, TrainingFailed, main, train

__all__ = ["TrainConfig", "TrainingFailed", "main", "train"]

"""Checkpoints: a folder with weights as safetensors and everything else as JSON. Never a pickle.

    <dir>/config.json        {"format_version": 1, "architecture": "sashimi", "config": {...model fields...},
                              "weights": "model.safetensors", "metadata": {dataset, training summary, ...}}
                             (indent 2, sorted keys, final newline)
    <dir>/model.safetensors  float32 parameters and buffers under the module's state_dict names. Complex SSM
                             parameters are already stored as real views (last dim 2 = re, im), like the
                             reference, so no tensor needs a special suffix.
    <dir>/README.md          model card (YAML front matter + intended use, data, metrics, limitations)

Writes are atomic (temp file in the same folder + os.replace), so a killed process never leaves a half
checkpoint. ``load_model`` reads only safetensors: pickles (``.pt``/``.bin``/``.ckpt`` or a pickle written
under the safetensors name) are refused with an explanation. The shipped models live in ``checkpoints/``;
user runs in ``runs/`` (env ``SASHIMI_RUNS``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
_ARCHITECTURES: dict[str, tuple[type, type]] = {}


def non_finite(named_tensors) -> list[str]:
    """Names of the floating-point tensors in (name, tensor) pairs that hold NaN or inf."""
    named = [(k, v) for k, v in named_tensors if v.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()  # one host sync on a GPU
    return [k for (k, _), ok in zip(named, flags, strict=True) if not ok]


def register_architecture(name: str, config_cls: type, model_cls: type) -> None:
    """Make ``load_model`` able to build ``model_cls(config_cls(**config))`` for config.json's architecture."""
    _ARCHITECTURES[name] = (config_cls, model_cls)


def _architectures() -> dict[str, tuple[type, type]]:
    if "sashimi" not in _ARCHITECTURES:
        from sashimi_core.sashimi import SaShiMi, SaShiMiConfig

        register_architecture("sashimi", SaShiMiConfig, SaShiMi)
    try:  # baselines register themselves on import
        import sashimi_core.baselines  # noqa: F401
    except ImportError:
        pass
    return _ARCHITECTURES


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path via a temp file in the same folder and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def config_dict(model) -> dict:
    """The model's config as a JSON-ready dict (without the architecture tag)."""
    fields = dataclasses.asdict(model.cfg)
    fields.pop("architecture", None)
    return fields


def save_model(model: torch.nn.Module, directory, card: str | None = None, **metadata) -> Path:
    """Save model to directory (created if needed): config.json, model.safetensors, README.md card.

    metadata (JSON types: dataset, steps, samples_seen, wall_time_s, hardware, test_nll_bits, ...) is stored
    under config.json["metadata"]. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, directory / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    config = {"format_version": FORMAT_VERSION, "architecture": model.cfg.architecture,
              "config": config_dict(model), "weights": WEIGHTS_FILE, "metadata": metadata,
              "n_parameters": sum(p.numel() for p in model.parameters())}
    atomic_write_json(directory / CONFIG_FILE, config)
    if card is not None or not (directory / CARD_FILE).exists():
        atomic_write_bytes(directory / CARD_FILE, (card or default_card(config, directory.name)).encode())
    return directory


def default_card(config: dict, name: str) -> str:
    """A minimal model card from config.json's content."""
    meta = config.get("metadata", {})
    cfg = config["config"]
    lines = ["---", "license: mit", "tags:", "- audio", "- sashimi", "- s4"]
    if meta.get("dataset"):
        lines += ["datasets:", f"- {meta['dataset']}"]
    lines += ["---", "", f"# {name}", "",
              f"{config['architecture']} model, {config.get('n_parameters', 0):,} parameters, "
              f"{cfg.get('sample_rate', 16000)} Hz, 8-bit {cfg.get('quantization', 'mu-law')}.", ""]
    for key in ("dataset", "steps", "samples_seen", "wall_time_s", "hardware", "test_nll_bits"):
        if key in meta:
            lines.append(f"- {key.replace('_', ' ')}: {meta[key]}")
    return "\n".join(lines) + "\n"


def read_config(directory) -> dict:
    """Parse and validate <directory>/config.json. Raises ValueError with a clear message."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise ValueError(f"checkpoint folder {directory} does not exist")
    if not path.is_file():
        pickles = [p.name for p in directory.glob("*") if p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl")]
        hint = f" (found {pickles}: pickled checkpoints are not loaded; convert them to safetensors)" if pickles else ""
        raise ValueError(f"{directory} is not a checkpoint: {CONFIG_FILE} is missing{hint}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupted") from exc
    if not isinstance(config, dict) or "config" not in config or "architecture" not in config:
        raise ValueError(f"{path} lacks 'architecture'/'config': not a sashimi_core checkpoint")
    return config


def _weights_path(directory: Path, config: dict) -> Path:
    name = config.get("weights", WEIGHTS_FILE)
    path = (directory / name).resolve()
    if path.parent != directory.resolve():
        raise ValueError(f"config.json of {directory} points its weights outside the checkpoint folder "
                         f"({name!r}); refusing to load")
    if path.suffix != ".safetensors":
        raise ValueError(f"weights file {name!r} is not .safetensors; only safetensors are loaded (no pickles)")
    if not path.is_file():
        raise ValueError(f"weights file {path} is missing")
    check_safetensors_file(path)
    return path


def check_safetensors_file(path: Path) -> None:
    """Raise ValueError unless path looks like safetensors (8-byte little-endian header size, then '{').

    A pickle (protocol 2+ starts with 0x80) or a torch.save zip ('PK') gets a message that says so; we never
    hand such a file to an unpickler."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
                             and head[8:9] != b"{"):
        raise ValueError(f"{path} is a pickle/torch.save file, not safetensors; refusing to unpickle it")
    if len(head) < 9 or head[8:9] != b"{":
        raise ValueError(f"{path} is not a safetensors file (bad header); the checkpoint is corrupted")


def build_model(architecture: str, fields: dict, source: str = "config"):
    """Instantiate a model from an architecture name and config fields (unknown keys warn, missing default)."""
    archs = _architectures()
    if architecture not in archs:
        raise ValueError(f"unknown architecture {architecture!r} in {source}; known: {sorted(archs)}")
    config_cls, model_cls = archs[architecture]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        log.warning("%s: ignoring unknown config keys %s", source, unknown)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items() if k in names}
    try:
        cfg = config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid model config: {exc}") from exc
    return model_cls(cfg)


def load_model(directory, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a checkpoint folder written by :func:`save_model`. The model is returned in eval mode.

    The returned model has ``.checkpoint`` = {"path", "metadata", "n_parameters"} attached."""
    directory = Path(directory)
    config = read_config(directory)
    weights = _weights_path(directory, config)
    model = build_model(config["architecture"], config["config"], str(directory / CONFIG_FILE))
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights} could not be read as safetensors ({exc}); the checkpoint is corrupted") from exc
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        raise ValueError(f"{weights} does not match its config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shape mismatches {bad[:5]}")
    bad_values = non_finite(state.items())
    if bad_values:
        raise ValueError(f"{weights} contains NaN/inf values in {bad_values[:5]}; the checkpoint is corrupted")
    model.load_state_dict(state)
    model.to(map_location).eval()
    model.checkpoint = {"path": str(directory), "metadata": config.get("metadata", {}),
                        "n_parameters": sum(p.numel() for p in model.parameters())}
    return model


def runs_dir() -> Path:
    """Folder of user training runs (env SASHIMI_RUNS, default ./runs)."""
    return Path(os.environ.get("SASHIMI_RUNS", "runs"))


def list_checkpoints(roots=None) -> list[dict]:
    """Generative-model checkpoints under the given roots (default: shipped ``checkpoints/`` and the runs folder).

    Each entry: {"name", "path", "shipped", "architecture", "config", "metadata", "n_parameters"}.
    Folders with an unreadable config are skipped with a warning. A run folder's checkpoint may sit in a
    ``checkpoint/`` sub-folder (see train.py)."""
    if roots is None:
        shipped = Path(__file__).resolve().parent.parent / "checkpoints"
        roots = [(shipped, True), (runs_dir(), False)]
    out = []
    for root, shipped in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for cand in (folder, folder / "checkpoint"):
                if (cand / CONFIG_FILE).is_file():
                    try:
                        cfg = read_config(cand)
                    except ValueError as exc:
                        log.warning("skipping %s: %s", cand, exc)
                        break
                    arch = _architectures().get(cfg["architecture"])
                    if arch is None or not hasattr(arch[1], "start"):  # not generative (e.g. the classifier)
                        break
                    out.append({"name": folder.name, "path": str(cand), "shipped": shipped,
                                "architecture": cfg["architecture"], "config": cfg["config"],
                                "metadata": cfg.get("metadata", {}), "n_parameters": cfg.get("n_parameters")})
                    break
    return out

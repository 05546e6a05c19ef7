"""Checkpoints: a folder with weights as safetensors and everything else as JSON. Never a pickle.

    <dir>/config.json        {"format_version": 1, "architecture": "sashimi", "config": {...model fields...},
                              "weights": "model.safetensors", "metadata": {dataset, training summary, ...}}
                             (indent 2, sorted keys, final newline)
    <dir>/model.safetensors  float32 parameters and buffers under the module's state_dict names. Complex SSM
                             parameters are already stored as real views (last dim 2 = re, im), like the
                             reference, so no tensor needs a special suffix.
    <dir>/README.md          model card (YAML front matter + intended use, data, metrics, limitations)

Writes are atomic (temp file in the same folder + os.replace), so a killed process never leaves a half
checkpoint; temp files a kill left behind (``.<name>.*.tmp``) are removed by the next ``save_model``. Configs
are checked against types and size bounds (``validate_config``) before any model is built. ``load_model`` reads
only safetensors: pickles (``.pt``/``.bin``/``.ckpt`` or a pickle written under the safetensors name) are refused
with an explanation. The shipped models live in ``checkpoints/``; user runs in ``runs/`` (env ``SASHIMI_RUNS``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import types
import typing
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sashimi_core.nn.registry import ARCHITECTURES, NON_GENERATIVE
from sashimi_core.ops.metrics import non_finite

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"

# Bounds every architecture shares (each config class adds its own in LIMITS and size_limits()).
MAX_PARAMETERS = 64_000_000  # largest preset: samplernn-2tier, 51.85M
COMMON_LIMITS = {"n_tokens": (2, 65536), "sample_rate": (1000, 192000), "quantization": ("mu-law", "linear")}


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
    remove_temp_files(directory)
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


def remove_temp_files(directory: Path) -> None:
    """Delete the temp files (``.<name>.*.tmp``) that atomic writes killed half-way left in directory."""
    for path in Path(directory).glob(".*.tmp"):
        if not path.is_dir():
            path.unlink(missing_ok=True)


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_type(hint) -> tuple[type | None, type | None, bool]:
    """(base type, tuple item type, None allowed) of a field's type hint: int | None -> (int, None, True)."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        hint = next(a for a in args if a is not type(None))
    base = typing.get_origin(hint) or hint
    item = typing.get_args(hint)[0] if base is tuple and typing.get_args(hint) else None
    return (base if isinstance(base, type) else None), item, nullable


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", tuple: "a list"}


def _check_type(name: str, value, hint, source: str):
    """value checked against the field's type hint (lists become tuples, ints become floats where floats go)."""
    base, item, nullable = _field_type(hint)
    if value is None and nullable or base not in _TYPE_NAMES:
        return value
    if base in (int, bool, str) and isinstance(value, base) and (base is not int or _is_int(value)):
        return value
    if base is float and (isinstance(value, float) and math.isfinite(value) or _is_int(value) and abs(value) < 2**53):
        return float(value)
    if base is tuple and isinstance(value, list | tuple) and (item is not int or all(map(_is_int, value))):
        return tuple(value)
    what = "a list of integers" if item is int else _TYPE_NAMES[base]
    raise ValueError(f"{source}: {name} must be {what}{' or null' if nullable else ''}, got {_short(value)} "
                     f"({type(value).__name__})")


def _check_limit(name: str, value, limit, source: str) -> None:
    """Raise ValueError unless value is within limit: (min, max[, max length]) or a tuple of allowed values."""
    if limit is None or value is None and None not in limit:
        return
    if not all(_is_int(x) or isinstance(x, float) for x in limit):  # allowed values
        if value not in limit:
            raise ValueError(f"{source}: {name} must be one of {list(limit)}, got {_short(value)}")
        return
    lo, hi = limit[:2]
    items = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and len(limit) > 2 and len(value) > limit[2]:
        raise ValueError(f"{source}: {name} has {len(value)} items, at most {limit[2]} are allowed")
    for x in items:
        if not lo <= x <= hi:
            raise ValueError(f"{source}: {name} = {_short(value)} is out of bounds: allowed {lo}..{hi}"
                             + (" for each item" if isinstance(value, tuple) else ""))


def validate_config(architecture, fields, source: str = "config"):
    """The config object for an architecture name and JSON config fields, checked before anything is built.

    Each field's type (from the config class's annotations), its bounds (COMMON_LIMITS and the class's LIMITS), the
    parameter count (config.n_parameters(), at most MAX_PARAMETERS) and the class's size_limits() are checked;
    a violation raises ValueError naming the field, its value and the bound. Unknown keys warn, missing ones default."""
    archs = ARCHITECTURES
    if not isinstance(architecture, str) or architecture not in archs:
        raise ValueError(f"unknown architecture {_short(architecture)} in {source}; known: {sorted(archs)}")
    if not isinstance(fields, dict):
        raise ValueError(f"{source}: the model config must be a JSON object, got {type(fields).__name__}")
    config_cls = archs[architecture][0]
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)} - {"architecture"}
    unknown = sorted(map(str, set(fields) - names - {"architecture"}))
    if unknown:
        log.warning("%s: ignoring unknown config keys %s", source, unknown)
    limits = {**COMMON_LIMITS, **getattr(config_cls, "LIMITS", {})}
    kwargs = {}
    for name in sorted(names & set(fields)):
        kwargs[name] = _check_type(name, fields[name], hints[name], source)
        _check_limit(name, kwargs[name], limits.get(name), source)
    try:
        cfg = config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid model config: {exc}") from exc
    sizes = list(cfg.size_limits()) if hasattr(cfg, "size_limits") else []
    if hasattr(cfg, "n_parameters"):
        sizes.insert(0, ("parameters", cfg.n_parameters(), MAX_PARAMETERS))
    for what, value, bound in sizes:
        if value > bound:
            raise ValueError(f"{source}: the model's {what} = {value:,} exceeds the maximum {bound:,}")
    return cfg


def build_model(architecture: str, fields: dict, source: str = "config"):
    """Instantiate a model from an architecture name and config fields, validated first (validate_config)."""
    cfg = validate_config(architecture, fields, source)
    return ARCHITECTURES[architecture][1](cfg)


def load_model(directory, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a checkpoint folder written by :func:`save_model`. The model is returned in eval mode.

    The returned model has ``.checkpoint`` = {"path", "metadata", "n_parameters"} attached."""
    directory = Path(directory)
    config = read_config(directory)
    cfg = validate_config(config["architecture"], config["config"], str(directory / CONFIG_FILE))
    weights = _weights_path(directory, config)
    model = ARCHITECTURES[config["architecture"]][1](cfg)
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

    Each entry: {"name", "path", "shipped", "architecture", "config", "metadata", "n_parameters"}, its config
    validated (validate_config) and its metadata a dict. Malformed folders are skipped with a warning, so one
    bad run never hides the others. A run folder's checkpoint may sit in a ``checkpoint/`` sub-folder (train.py)."""
    if roots is None:
        shipped = Path(__file__).resolve().parents[1] / "checkpoints"
        roots = [(shipped, True), (runs_dir(), False)]
    out = []
    for root, shipped in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            cand = next((c for c in (folder, folder / "checkpoint") if (c / CONFIG_FILE).is_file()), None)
            if cand is None:
                continue
            try:
                entry = _list_entry(cand)
            except (ValueError, OSError) as exc:
                log.warning("skipping %s: %s", cand, exc)
                continue
            if entry is not None:
                out.append({"name": folder.name, "path": str(cand), "shipped": shipped, **entry})
    return out


def _list_entry(folder: Path) -> dict | None:
    """list_checkpoints' fields for one checkpoint folder; None if it is not generative (e.g. the classifier).
    Raises ValueError if config.json is malformed."""
    config = read_config(folder)
    source, arch = str(folder / CONFIG_FILE), config["architecture"]
    known = ARCHITECTURES
    if isinstance(arch, str) and (arch in NON_GENERATIVE or arch in known and not hasattr(known[arch][1], "start")):
        return None
    validate_config(arch, config["config"], source)
    metadata, n_parameters = config.get("metadata") or {}, config.get("n_parameters")
    if not isinstance(metadata, dict):
        raise ValueError(f"{source}: metadata must be a JSON object, got {type(metadata).__name__}")
    if n_parameters is not None and not (_is_int(n_parameters) and n_parameters >= 0):
        raise ValueError(f"{source}: n_parameters must be a non-negative integer, got {_short(n_parameters)}")
    return {"architecture": arch, "config": config["config"], "metadata": metadata, "n_parameters": n_parameters}

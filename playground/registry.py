"""The model registry: cards of every generative checkpoint (shipped and user runs), lookup by id, the
Models table and picker labels, and how server folders are shown (relative in public mode)."""
from __future__ import annotations

from pathlib import Path

from playground.settings import ROOT, ServiceError, Settings


def _roots(settings: Settings) -> list[tuple[Path, bool]]:
    return [(Path(settings.checkpoints_dir), True), (Path(settings.runs_dir), False)]


def shown_path(settings: Settings, path) -> str:
    """A server path as users may see it: as is locally; in public mode relative to the folder it lives in
    ("checkpoints/piano-synth", "runs/my-run/checkpoint"), never the server's absolute layout."""
    return redact(settings, str(path))


def redact(settings: Settings, text: str) -> str:
    """text with the server's folders (checkpoints, runs, data, outputs, this checkout) replaced by short
    names in public mode; unchanged locally."""
    if not settings.public:
        return text
    folders = [(settings.checkpoints_dir, "checkpoints"), (settings.runs_dir, "runs"), (settings.data_dir, "data"),
               (settings.output_dir, "outputs"), (ROOT, "."), (Path.home(), "~")]
    pairs = sorted(((str(Path(f).resolve()), name) for f, name in folders), key=lambda x: -len(x[0]))
    for folder, name in pairs:
        if len(folder) > 1:
            text = text.replace(folder, name)
    return text


def list_models(settings: Settings) -> list[dict]:
    """Cards of every generative checkpoint: shipped ones first, then user runs (incl. runs/<name>/checkpoint/).

    Each card: id (unique name used by every other call), name, checkpoint (folder), run_dir, folder (the folder
    as users see it: see shown_path), shipped, architecture, n_parameters, dataset, nll_bits, sample_rate,
    quantization, steps, and the README text."""
    from sashimi_core import list_checkpoints

    cards, seen = [], set()
    for entry in list_checkpoints(_roots(settings)):
        cfg, meta = entry["config"], entry.get("metadata") or {}
        if "n_tokens" not in cfg:  # not a token model (e.g. the SC09 digit classifier): nothing to sample
            continue
        model_id = entry["name"] if entry["name"] not in seen else f"runs/{entry['name']}"
        seen.add(model_id)
        path = Path(entry["path"])
        readme = path / "README.md"
        nll = meta.get("test_nll_bits", meta.get("val_nll_bits", meta.get("nll_bits")))
        cards.append({
            "id": model_id, "name": entry["name"], "checkpoint": str(path),
            "folder": shown_path(settings, path),
            "shipped": bool(entry["shipped"]),
            "run_dir": str(path.parent if path.name == "checkpoint" else path),
            "architecture": entry["architecture"], "n_parameters": entry.get("n_parameters"),
            "dataset": meta.get("dataset"), "nll_bits": nll, "steps": meta.get("steps"),
            "sample_rate": int(cfg.get("sample_rate", 16000)),
            "quantization": cfg.get("quantization", "mu-law"),
            "preset": meta.get("preset"), "d_model": cfg.get("d_model"), "n_layers": cfg.get("n_layers"),
            "sampling": _recommended_sampling(meta),
            "card": readme.read_text(errors="replace") if readme.is_file() else "",
        })
    return cards


def client_cards(settings: Settings) -> list[dict]:
    """list_models as API clients get it (/list_models): in public mode without server folders."""
    cards = list_models(settings)
    if settings.public:
        cards = [{k: v for k, v in c.items() if k not in ("checkpoint", "run_dir")} for c in cards]
    return cards


def _recommended_sampling(meta: dict) -> dict | None:
    """{"temperature", "top_p"} the model card recommends (config.json metadata "recommended_sampling", set
    from the model's quality report), or None when absent or out of range."""
    rec = meta.get("recommended_sampling")
    if not isinstance(rec, dict):
        return None
    t, p = rec.get("temperature"), rec.get("top_p")
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (t, p))
    return {"temperature": float(t), "top_p": float(p)} if ok and 0 <= t <= 2 and 0 < p <= 1 else None


def find_model(settings: Settings, model_id: str) -> dict:
    """The card of one model; ServiceError naming the available ones when it does not exist."""
    if not model_id:
        raise ServiceError("No model selected. Pick one in the model list (train one or import one first "
                           "if the list is empty).")
    cards = list_models(settings)
    for card in cards:
        if card["id"] == model_id:
            return card
    names = ", ".join(c["id"] for c in cards) or "none yet"
    raise ServiceError(f"Unknown model {model_id!r}. Available models: {names}.")


TABLE_HEADERS = ["model", "kind", "data set", "params", "NLL (bits)", "steps", "sample rate", "quantisation",
                 "path"]


def model_table(settings: Settings) -> list[list]:
    """Rows (TABLE_HEADERS) for the Models tab's table."""
    rows = []
    for c in list_models(settings):
        nll = c.get("nll_bits")
        rows.append([c["id"], "shipped" if c["shipped"] else "run", c.get("dataset") or "",
                     f"{c['n_parameters'] / 1e6:.3f}M" if c.get("n_parameters") else "",
                     f"{nll:.3f}" if isinstance(nll, (int, float)) else "", c.get("steps") or "",
                     c["sample_rate"], c["quantization"], c["folder"]])
    return rows


def model_label(card: dict) -> str:
    """One line for a model picker."""
    params = f"{card['n_parameters'] / 1e6:.2f}M" if card.get("n_parameters") else "?"
    nll = f" · {card['nll_bits']:.3f} bits" if isinstance(card.get("nll_bits"), (int, float)) else ""
    where = "shipped" if card["shipped"] else "run"
    return f"{card['id']} ({where} · {params}{nll})"


def describe_model(card: dict) -> str:
    """Markdown summary of a model card for the Generate tab."""
    nll = card.get("nll_bits")
    rows = [("data set", card.get("dataset") or "unknown"),
            ("parameters", f"{card['n_parameters']:,}" if card.get("n_parameters") else "?"),
            ("NLL", f"{nll:.3f} bits/sample" if isinstance(nll, (int, float)) else "not measured"),
            ("sample rate", f"{card['sample_rate']} Hz"), ("quantisation", f"8-bit {card['quantization']}"),
            ("source", "shipped checkpoint" if card["shipped"] else f"user run `{card['folder']}`")]
    if card.get("steps"):
        rows.insert(3, ("training steps", f"{card['steps']:,}"))
    return f"**{card['id']}** ({card['architecture']}) · " + " · ".join(f"{k}: {v}" for k, v in rows)

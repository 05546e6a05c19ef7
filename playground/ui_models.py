"""Models tab: table of shipped checkpoints and user runs with their model cards; delete a user run; import
a reference-format (state-spaces/s4) backbone from .safetensors + JSON config into a new run."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground import jobs, services
from playground.ui_generate import call, user_error

IMPORT_HELP = """\
**Import a reference backbone.** Upload the weights of a backbone trained with the reference implementation
(state-spaces/s4, standalone `Sashimi`) as **.safetensors** (pickled `.pt`/`.ckpt` files are refused: the app
never unpickles uploads) and its constructor config as JSON, e.g.
`{"d_model": 64, "n_layers": 8, "pool": [4, 4], "expand": 2, "ff": 2, "unet": false}`.
Reference backbones have **no token embedding or output head**: the imported model gets freshly initialised
ones, so it produces noise until fine-tuned. It is meant for fine-tuning (Train tab, Resume) and for
inspecting the backbone. It is saved as a new run under `runs/`."""


class ModelsHandlers:
    """The Models tab's event handlers, bound to one Settings."""

    def __init__(self, settings: services.Settings):
        self.settings = settings

    def list_models(self) -> list[dict]:
        """Every shipped checkpoint and user run with its card (JSON)."""
        return services.client_cards(self.settings)

    def table(self, current=None):
        """(table rows, picker update, picked id): current stays picked while it exists."""
        rows = services.model_table(self.settings)
        ids = [r[0] for r in rows]
        value = current if current in ids else (ids[0] if ids else None)
        return rows, gr.Dropdown(choices=ids, value=value), value

    def card(self, model_id) -> str:
        if not model_id:
            return "No model selected."
        try:
            card = services.find_model(self.settings, model_id)
        except ValueError as exc:
            return f"**Cannot use this model:** {services.redact(self.settings, str(exc))}"
        text = card["card"]
        if text.startswith("---"):  # YAML front matter: shown by the Hub, noise here
            text = text.split("\n---", 1)[-1].lstrip("-\n")
        return services.describe_model(card) + "\n\n---\n\n" + text if text.strip() else \
            services.describe_model(card)

    def quality(self, model_id):
        """(quality report markdown, spectrogram grid PNG) of a model, from its `python -m bench quality`."""
        if not model_id:
            return "", None
        try:
            text, png = services.model_quality(self.settings, model_id)
        except ValueError:
            return "", None
        if not text:
            return ("*No quality report for this model yet: `python -m bench quality <checkpoint> --data <data set> "
                    "--out <checkpoint>/quality.json` writes one.*"), None
        return text, str(png) if png else None

    def delete(self, model_id, confirm: bool) -> str:
        """Delete a user run (shipped models are refused)."""
        if not confirm:
            raise user_error("Tick 'I understand this deletes the run folder' first.", "delete_run")
        message = call(jobs.delete_run, self.settings, model_id)
        gr.Info(message)
        return message

    def import_reference(self, weights, config_file, config_text, name, quantization, sample_rate) -> str:
        """Import a reference backbone (.safetensors + JSON config) as a new run."""
        config = Path(config_file) if config_file else config_text
        card = call(jobs.import_reference, self.settings, weights, config, (name or "").strip(), quantization,
                    int(sample_rate or 16000))
        message = (f"Imported **{card['id']}** ({card['n_parameters']:,} parameters) into "
                   f"`{card['run_dir']}`. Its embedding and head are fresh: fine-tune it before listening.")
        gr.Info(f"Imported {card['id']}.")
        return message


def build(settings: services.Settings) -> dict:
    """Lay out the Models tab and wire its events; returns the components the app refreshes."""
    h = ModelsHandlers(settings)
    with gr.Row(equal_height=True):
        gr.Markdown("Shipped checkpoints (`checkpoints/`) and your runs (`runs/`, finished or in progress).")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    table = gr.Dataframe(headers=list(services.TABLE_HEADERS), interactive=False, wrap=True,
                         elem_id="models-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            picker = gr.Dropdown(label="Model", choices=[], allow_custom_value=True)
            card = gr.Markdown(elem_classes=["model-card"])
            with gr.Accordion("Quality report (generated next to real test clips)", open=False):
                quality = gr.Markdown(elem_id="model-quality")
                grid = gr.Image(label="Log-mel spectrograms: unconditional · continuation · real", type="filepath",
                                interactive=False, buttons=["download"])
        with gr.Column(scale=2):
            with gr.Accordion("Delete a run", open=False):
                gr.Markdown("Deletes the run folder (checkpoint, metrics, samples). Shipped models cannot be "
                            "deleted; a run that is training must be stopped first.")
                confirm = gr.Checkbox(label="I understand this deletes the run folder", value=False)
                delete_btn = gr.Button("Delete run", variant="stop", size="sm")
                delete_msg = gr.Markdown()
            with gr.Accordion("Import a reference backbone", open=False):
                gr.Markdown(IMPORT_HELP)
                weights = gr.File(label="Weights (.safetensors)", file_types=[".safetensors"],
                                  type="filepath")
                config_file = gr.File(label="Config (.json, optional if pasted below)", file_types=[".json"],
                                      type="filepath")
                config_text = gr.Code(label="…or paste the config JSON", language="json", lines=3,
                                      value='{"d_model": 64, "n_layers": 8, "pool": [4, 4], "expand": 2, '
                                            '"ff": 2, "unet": false}')
                with gr.Row():
                    name = gr.Textbox(label="New model name", placeholder="e.g. reference-sc09")
                    quantization = gr.Radio(["mu-law", "linear"], value="mu-law", label="Quantisation")
                    sample_rate = gr.Number(label="Sample rate (Hz)", value=16000, precision=0)
                import_btn = gr.Button("Import", variant="primary", size="sm")
                import_msg = gr.Markdown()
    with gr.Accordion("Models as JSON (what /list_models returns)", open=False):
        models_json = gr.JSON(open=False, show_label=False)

    picker.change(h.card, [picker], [card], api_name="model_readme", queue=False)
    picker.change(h.quality, [picker], [quality, grid], api_name="model_quality", queue=False)
    refreshed = refresh.click(h.list_models, None, [models_json], api_name="list_models", queue=False)
    delete_done = delete_btn.click(h.delete, [picker, confirm], [delete_msg], api_name="delete_run")
    import_inputs = [weights, config_file, config_text, name, quantization, sample_rate]
    import_done = import_btn.click(h.import_reference, import_inputs, [import_msg],
                                   api_name="import_reference")
    return {"table": table, "picker": picker, "card": card, "models_json": models_json, "handlers": h,
            "changed": [refreshed, delete_done, import_done], "confirm": confirm}


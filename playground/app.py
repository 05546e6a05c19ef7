"""build_app(): the playground's Blocks (Generate, Train, Models tabs), not launched; launch_options(): the
matching ``launch()`` keyword arguments (CSS, theme, upload limit, allowed paths). ``app.py`` launches."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground import services, ui_generate, ui_listen, ui_models, ui_train

CSS = Path(__file__).resolve().parent.parent / "assets" / "playground.css"
INTRO = """\
# SaShiMi playground
Raw-audio generation with **SaShiMi** (Goel et al., *It's Raw! Audio Generation with State-Space
Models*, 2022): an autoregressive model over 8-bit audio samples. Give it a prompt (or none), pick a
model and sample."""


def theme() -> gr.themes.Theme:
    """Default theme with system fonts only, so the app works offline (no Google Fonts requests)."""
    sans = [gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), gr.themes.Font("sans-serif")]
    mono = [gr.themes.Font("ui-monospace"), gr.themes.Font("monospace")]
    return gr.themes.Soft(primary_hue="orange", neutral_hue="slate", font=sans, font_mono=mono)


def refresh_all(settings: services.Settings, gen_current, models_current):
    """Model lists everywhere: the Generate picker and card, the Models table, picker and card."""
    gen = ui_generate.GenerateHandlers(settings)
    mod = ui_models.ModelsHandlers(settings)
    picker, card = gen.model_picker(gen_current)
    rows, models_picker, picked = mod.table(models_current)
    return picker, card, rows, models_picker, mod.card(picked)


def build_app(settings: services.Settings | None = None) -> gr.Blocks:
    """The playground as gr.Blocks (queue configured, not launched)."""
    settings = settings or services.Settings.create()
    services.start_cleaner(settings)
    services.start_warmup(settings)
    with gr.Blocks(title="SaShiMi playground", analytics_enabled=False,
                   delete_cache=(600, int(settings.output_max_age_s))) as demo:
        gr.Markdown(INTRO + ("\n\n*Public mode: shorter clips, fewer samples, training off.*"
                             if settings.public else ""), elem_id="intro")
        timer = gr.Timer(ui_train.POLL_S)  # polls runs and checkpoints (outside the tabs: ticks on every tab)
        models_signal = gr.Textbox(visible="hidden")  # checkpoint list as the timer last saw it
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                gen = ui_generate.build(settings)
            with gr.Tab("Train", id="train"):
                train = ui_train.build(settings, timer, models_signal)
            with gr.Tab("Models", id="models"):
                models = ui_models.build(settings)
            with gr.Tab("Listen", id="listen"):
                ui_listen.build_listen_tab(settings)

        outputs = [gen["model"], gen["card"], models["table"], models["picker"], models["card"]]
        inputs = [gen["model"], models["picker"]]

        def refresh(gen_current, models_current):
            return refresh_all(settings, gen_current, models_current)

        for event in models["changed"]:
            event.then(refresh, inputs, outputs, api_visibility="undocumented", queue=False)
        models_signal.change(refresh, inputs, outputs, api_visibility="undocumented", queue=False)
        demo.load(refresh, inputs, outputs, api_name="load_models", api_visibility="undocumented",
                  queue=False)
        demo.load(train["handlers"].datasets, [train["data"]], [train["data"]], queue=False,
                  api_visibility="undocumented")
        demo.load(train["handlers"].runs, [train["run"]], [train["run"]], queue=False,
                  api_visibility="undocumented")
    ui_listen.build_rater_page(demo, settings)  # the /rate page (must come after everything else of demo)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return demo


def launch_options(settings: services.Settings, host: str = "127.0.0.1", port: int = 7860,
                   share: bool = False) -> dict:
    """Keyword arguments for demo.launch() that go with build_app(settings)."""
    # Only the output folder is served: runs/ (job records, logs, resume state) never is; a training sample
    # is copied into the output folder when shown (services.publish_file).
    return dict(server_name=host, server_port=port, share=share, theme=theme(),
                css_paths=[CSS] if CSS.is_file() else None, max_file_size=f"{settings.max_upload_mb}mb",
                allowed_paths=[str(Path(settings.output_dir).resolve())], show_error=True,
                footer_links=["api", "settings"])

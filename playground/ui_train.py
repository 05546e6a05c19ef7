"""Train tab: build or pick a data set, choose a preset and schedule, start / stop / resume a training
process, and watch it (loss and validation NLL, samples/s, ETA, latest samples) through a gr.Timer that
polls the run folder. Training is a separate process, so it survives browser refreshes and app restarts:
the run picker reattaches to whatever job is running.
"""
from __future__ import annotations

import time

import gradio as gr

from playground import audio_io, jobs, plots, services
from playground.ui_generate import call

POLL_S = 2.0
N_SAMPLES_SHOWN = 2


def _bar(fraction: float, text: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="build-progress"><div class="bar"><div style="width:{pct:.0f}%"></div></div>'
            f"<span>{text}</span></div>")


class TrainHandlers:
    """The Train tab's event handlers, bound to one Settings."""

    def __init__(self, settings: services.Settings):
        self.settings = settings

    def datasets(self, current=None):
        choices = jobs.list_datasets(self.settings)
        return gr.Dropdown(choices=choices, value=current if current else (choices[0] if choices else None))

    def runs(self, current=None):
        names = jobs.list_runs(self.settings)
        value = current if current in names else (names[0] if names else None)
        return gr.Dropdown(choices=names, value=value)

    def build_dataset(self, name: str, small: bool) -> str:
        """Start building a data set (sc09-synth or piano-synth) in the background."""
        call(jobs.start_build, self.settings, name, bool(small))
        gr.Info(f"Building {name}{' (small)' if small else ''}; progress shows below.")
        return _bar(0.0, f"building {name}: starting")

    def start(self, name, data, preset, steps, batch, lr):
        """Start a new training run; returns the run picker pointing at it."""
        data_name = str(data or "data").rstrip("/").split("/")[-1]
        name = (name or "").strip() or f"{preset}-{data_name}-{time.strftime('%m%d-%H%M')}"
        call(jobs.start_training, self.settings, name, data, preset, steps, batch, lr)
        gr.Info(f"Training run {name!r} started.")
        return self.runs(name)

    def stop(self, run):
        gr.Info(call(jobs.stop_training, self.settings, run))

    def resume(self, run):
        call(jobs.resume_training, self.settings, run)
        gr.Info(f"Resuming {run!r}.")
        return self.runs(run)

    def _status(self, run) -> dict | None:
        """run_status of a run named by the client; None for no name, gr.Error for one that is not a run."""
        if not run:
            return None
        return jobs.run_status(call(jobs.run_folder, self.settings, run))

    def status(self, run) -> dict:
        """The selected run's status as JSON (for API clients)."""
        st = self._status(run)
        if st is None:
            return {"state": "none"}
        hidden = ("train", "val", "log_tail", "run_dir") + (("command", "samples") if self.settings.public else ())
        return {k: v for k, v in st.items() if k not in hidden}

    def poll(self, run, data, seen):
        """Timer tick: refresh what changed (gr.skip() for the rest, so players are not reset)."""
        seen = dict(seen or {})
        out = {}
        try:
            st = self._status(run)
        except gr.Error:
            st = None
        key = (run, st["metrics_mtime"], st["state"]) if st else None
        if key != seen.get("metrics", "unset"):
            seen["metrics"] = key
            out["status"] = jobs.describe_status(st) if st else "No run selected. Start one on the left."
            out["plot"] = plots.training_figure(st["train"] if st else [], st["val"] if st else [])
        if st and st["log_tail"] != seen.get("log"):
            seen["log"] = out["log"] = st["log_tail"]
        samples = tuple((s["wav"], s["step"]) for s in st["samples"]) if st else ()
        if samples != seen.get("samples"):
            seen["samples"] = samples
            out["samples"] = self._samples(st["samples"] if st else [])
        running_any = bool(jobs.running_runs(self.settings))
        buttons = (self.settings.training and not running_any,
                   bool(st and st["running"]), bool(st and not st["running"] and st["pid"] is not None
                                                    and st["state"] != "finished" and self.settings.training))
        if buttons != seen.get("buttons"):
            seen["buttons"] = buttons
            out["buttons"] = [gr.Button(interactive=b) for b in buttons]
        build = jobs.build_status(self.settings, data) if data in jobs.BUILDERS else None
        build_html = _bar(build["fraction"], build["text"]) if build else ""
        if build_html != seen.get("build"):
            seen["build"] = out["build"] = build_html
        cards = services.list_models(self.settings)  # ids and training steps: a new or updated checkpoint
        models = "\n".join(f"{c['id']} {c.get('steps')} {c.get('nll_bits')}" for c in cards)
        if models != seen.get("models"):
            seen["models"] = out["models"] = models
        skip = gr.skip()
        sample_out = out.get("samples", [skip] * (4 * N_SAMPLES_SHOWN))
        return [out.get("status", skip), out.get("plot", skip), *sample_out, out.get("log", skip),
                *out.get("buttons", [skip] * 3), out.get("build", skip), out.get("models", skip), seen]

    def _samples(self, samples: list[dict]) -> list:
        out = []
        for i in range(N_SAMPLES_SHOWN):
            if i >= len(samples):
                out += [gr.Group(visible=False), "", None, None]
                continue
            s = samples[i]
            try:
                sr, audio = audio_io.load_wav(s["wav"])
            except (OSError, RuntimeError):
                out += [gr.Group(visible=False), "", None, None]
                continue
            nll = f" · NLL {s['nll_bits']:.3f} bits" if s.get("nll_bits") is not None else ""
            wav = services.publish_file(self.settings, s["wav"])  # runs/ itself is never served
            out += [gr.Group(visible=True), f"Sample at step {s.get('step')}{nll}", str(wav),
                    plots.spectrogram_figure(audio, sr, height=250)]
        return out


def build(settings: services.Settings, timer: gr.Timer, models_signal: gr.Textbox) -> dict:
    """Lay out the Train tab and wire its events to `timer`. The timer and `models_signal` (a hidden Textbox
    that gets the list of checkpoint ids when it changes) live outside the tabs, so they work whichever tab is
    open and the app can refresh every model picker on its .change (gr.State.change does not fire for
    Timer updates in Gradio 6.31)."""
    h = TrainHandlers(settings)
    presets = list(jobs.training_presets(settings))
    if not settings.training:
        gr.Markdown("**Note:** Training is turned off on this public server (it would share one CPU with everyone). "
                    "Run the app locally (`python app.py`) to train; finished runs can be uploaded as "
                    "checkpoints.", elem_classes=["notice"])
    elif settings.max_train_steps:
        gr.Markdown(f"Public server: training is limited to {settings.max_train_steps} steps of "
                    f"{', '.join(presets)}.", elem_classes=["notice"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("### 1 · Data set")
            data = gr.Dropdown(label="Data set (name under data/ or a folder path)", choices=[],
                               allow_custom_value=True)
            with gr.Row(equal_height=True):
                small = gr.Checkbox(label="small build (quick test set)", value=True)
                build_btn = gr.Button("Build data set", size="sm", interactive=settings.training)
            build_html = gr.HTML()
            gr.Markdown("### 2 · Model and schedule")
            preset = gr.Dropdown(presets, value="sashimi-tiny" if "sashimi-tiny" in presets else presets[0],
                                 label="Preset")
            with gr.Row():
                steps = gr.Number(label="Steps", value=min(1000, settings.max_train_steps or 1000),
                                  precision=0, minimum=1)
                batch = gr.Number(label="Batch", value=4, precision=0, minimum=1)
                lr = gr.Number(label="Learning rate", value=4e-3, minimum=0)
            run_name = gr.Textbox(label="Run name (empty = automatic)", placeholder="e.g. sc09-tiny-test")
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", interactive=settings.training)
                stop_btn = gr.Button("Stop", variant="stop", interactive=False)
                resume_btn = gr.Button("Resume", interactive=False)
        with gr.Column(scale=3, min_width=420):
            run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id="train-run")
            status = gr.Markdown("No run selected.")
            plot = gr.Plot(label="Loss and validation NLL (bits/sample)")
            sample_outputs = []
            with gr.Row():
                for _ in range(N_SAMPLES_SHOWN):
                    with gr.Column(), gr.Group(visible=False, elem_classes=["train-sample"]) as group:
                        title = gr.Markdown()
                        audio = gr.Audio(type="filepath", interactive=False, label="Latest sample")
                        spec = gr.Plot(label="Spectrogram")
                    sample_outputs += [group, title, audio, spec]
            with gr.Accordion("Log", open=False):
                log_box = gr.Textbox(lines=12, max_lines=12, show_label=False, autoscroll=True)
    seen = gr.State({})
    status_json = gr.JSON(visible=False)

    build_btn.click(h.build_dataset, [data, small], [build_html], api_name="build_dataset")
    start_btn.click(h.start, [run_name, data, preset, steps, batch, lr], [run], api_name="start_training")
    stop_btn.click(h.stop, [run], None, api_name="stop_training")
    resume_btn.click(h.resume, [run], [run], api_name="resume_training")
    run.change(lambda: {}, None, [seen], api_visibility="undocumented", queue=False)
    status_btn = gr.Button(visible=False)
    status_btn.click(h.status, [run], [status_json], api_name="training_status")
    timer.tick(h.poll, [run, data, seen],
               [status, plot, *sample_outputs, log_box, start_btn, stop_btn, resume_btn, build_html,
                models_signal, seen], api_name="poll_training", api_visibility="undocumented",
               show_progress="hidden", queue=False)
    return {"data": data, "run": run, "handlers": h}

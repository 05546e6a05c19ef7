"""Generate tab: model picker with its card, prompt (upload / microphone, trimmed), sampling settings,
Generate / Stop, and up to MAX_SLOTS results (audio, log-mel spectrogram, NLL, WAV + params download,
"Continue this result").

Endpoints (gradio_client): /generate and /continue return (files, results JSON); /stop; /list_models is
wired in playground.app. The UI renders results from the JSON (/render_results), so the browser and API
clients go through the same generation code.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

import gradio as gr

from playground import audio_io, plots, services

log = logging.getLogger(__name__)
MAX_SLOTS = 8
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMPTY_RESULTS = ("*Results appear here: audio, a log-mel spectrogram with the prompt/continuation boundary, "
                 "NLL, and a WAV + params download for each sample.*")
EXAMPLES = [("digit_seven.wav", "spoken digit 'seven' (espeak-ng)"),
            ("digit_three.wav", "spoken digit 'three' (espeak-ng)"),
            ("piano_phrase.wav", "piano phrase (FluidR3_GM)")]


def user_error(message: str, where="") -> gr.Error:
    """The gr.Error for a refused request: its message goes to the user, one line (no traceback) to the log."""
    log.info("refused %s: %s", where, message[:200])
    return gr.Error(message, print_exception=False)


def call(fn, *args, **kwargs):
    """Run a service call; user errors -> gr.Error with their message, anything else -> gr.Error + log."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except (services.ServiceError, audio_io.AudioInputError) as exc:
        raise user_error(str(exc), getattr(fn, "__name__", fn)) from None
    except Exception as exc:  # noqa: BLE001 - the UI edge: log the trace, tell the user in one line
        log.exception("%s failed", getattr(fn, "__name__", fn))
        raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running; "
                       "try again or pick another model.") from exc


class GenerateHandlers:
    """The Generate tab's event handlers, bound to one Settings."""

    def __init__(self, settings: services.Settings):
        self.settings = settings

    def model_picker(self, current: str | None = None):
        cards = services.list_models(self.settings)
        ids = [c["id"] for c in cards]
        value = current if current in ids else (ids[0] if ids else None)
        choices = [(services.model_label(c), c["id"]) for c in cards]
        return gr.Dropdown(choices=choices, value=value), self.model_card(value)

    def model_card(self, model_id: str | None) -> str:
        if not model_id:
            return ("No models yet. Train one in the **Train** tab or import one in the **Models** tab; "
                    "finished and in-progress checkpoints show up here.")
        try:
            return services.describe_model(services.find_model(self.settings, model_id))
        except ValueError as exc:
            return f"⚠️ {exc}"

    def sampling_defaults(self, model_id):
        """The temperature and top-p the model's card recommends (unchanged sliders when it has none)."""
        try:
            rec = services.find_model(self.settings, model_id)["sampling"] if model_id else None
        except ValueError:
            rec = None
        if not rec:
            return gr.skip(), gr.skip()
        return rec["temperature"], rec["top_p"]

    def estimate(self, model_id, seconds, n_samples) -> str:
        est = services.estimate_seconds(self.settings, model_id, float(seconds or 0), int(n_samples or 1))
        st = self.settings
        cap = f"Length limit here: {st.max_seconds:g} s, up to {st.max_samples} samples."
        if est is None:
            return f"{cap} The first request also loads (and compiles) the model."
        about = "under a second" if est < 1 else f"about {est:.0f} s"
        return f"{cap} Sampling time at this model's last measured speed: {about} (+ reading the prompt)."

    @staticmethod
    def roll_seed(random_seed: bool, seed):
        """A fresh seed when 'random' is ticked, else the one shown (so it can be reused)."""
        if random_seed or seed is None or seed < 0:
            return secrets.randbelow(2**31 - 1)
        return int(seed)

    def _run(self, model_id, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
             request: gr.Request | None, progress, continue_only: bool):
        session = request.session_hash if request is not None and request.session_hash else ""
        fn = services.continue_clip if continue_only else services.generate_clips
        result = call(fn, self.settings, model_id, prompt, trim_start=trim_start or 0.0,
                      trim_end=trim_end or 0.0, temperature=temperature, top_p=top_p, seconds=seconds,
                      n_samples=n_samples,
                      seed=seed, session=session,
                      progress=lambda frac, msg: progress(frac, desc=msg))
        for warning in result["warnings"]:
            gr.Warning(warning)
        return result["files"], result

    def generate(self, model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
                 request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
        """Generate n_samples clips (prompt optional; seed -1 = random). Returns (files, results JSON)."""
        return self._run(model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
                         request, progress, continue_only=False)

    def continue_clip(self, model, audio, temperature, top_p, seconds, n_samples, seed,
                      request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
        """Continue an uploaded clip (required). Returns (files, results JSON)."""
        return self._run(model, audio, 0.0, 0.0, temperature, top_p, seconds, n_samples, seed, request,
                         progress, continue_only=True)

    @staticmethod
    def stop(request: gr.Request) -> None:
        if services.request_stop(request.session_hash or ""):
            gr.Info("Stopping after the current chunk; the audio generated so far will be shown.")
        else:
            gr.Warning("Nothing is being generated right now.")

    def render(self, results, files):
        """(results JSON, its files) -> updates for the summary and every result slot."""
        samples = (results or {}).get("samples") or []
        out = [self._summary(results) if samples else EMPTY_RESULTS]
        for i in range(MAX_SLOTS):
            if i >= len(samples):
                out += [gr.Group(visible=False), "", None, None, None]
                continue
            try:
                wav = services.result_file(results, i, files, "wav")
                params = services.result_file(results, i, files, "params")
                sr, audio = audio_io.load_wav(wav)
            except (ValueError, OSError) as exc:
                out += [gr.Group(visible=True), f"**Result {i + 1}**: {exc}", None, None, None]
                continue
            fig = plots.spectrogram_figure(audio, sr, boundary_s=results.get("prompt_seconds") or None)
            title = (f"**Result {i + 1}** · seed {results['seed']} · NLL {samples[i]['nll_bits']:.3f} "
                     f"bits/sample (generated part) · {len(audio) / sr:.2f} s")
            out += [gr.Group(visible=True), title, str(wav), fig, [str(wav), str(params)]]
        return out

    @staticmethod
    def _summary(r) -> str:
        prompt = "no prompt"
        if r.get("prompt_seconds"):
            nll = r.get("prompt_nll_bits")
            prompt = f"prompt {r['prompt_seconds']:.2f} s" + (f" (NLL {nll:.3f} bits/sample)" if nll else "")
        stopped = " · **stopped early**" if r.get("stopped") else ""
        return (f"**{r['model']}** · seed `{r['seed']}` · temperature {r['temperature']:g} · top-p "
                f"{r['top_p']:g} · {prompt} · generated {r['generated_seconds']:.2f} s in "
                f"{r['elapsed_s']:.1f} s{stopped}")

    @staticmethod
    def result_as_prompt(results, files, index: int):
        path = call(services.result_as_prompt, results, index, files)
        gr.Info(f"Result {int(index) + 1} is now the prompt; press Generate to continue it.")
        return path, 0.0, 0.0

    def example(self, prompt, trim_start, trim_end, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
        """Continuation of an example prompt by the first shipped model (cached after the first click)."""
        shipped = [c for c in services.list_models(self.settings) if c["shipped"]]
        if not shipped:
            raise user_error("No shipped model is available for the examples.", "example")
        result = call(services.generate_clips, self.settings, shipped[0]["id"], prompt, trim_start=trim_start,
                      trim_end=trim_end, seconds=min(1.0, self.settings.max_seconds), seed=0,
                      progress=lambda frac, msg: progress(frac, desc=msg))
        return result["files"], result


def build(settings: services.Settings) -> dict:
    """Lay out the Generate tab and wire its events; returns the components other tabs refresh."""
    h = GenerateHandlers(settings)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340):
            with gr.Row(equal_height=True):
                cards = services.list_models(settings)  # filled again on every page load
                model = gr.Dropdown(label="Model", choices=[(services.model_label(c), c["id"]) for c in cards],
                                    value=cards[0]["id"] if cards else None, allow_custom_value=True, scale=5,
                                    elem_id="model-picker")
                refresh = gr.Button("↻", scale=0, min_width=44, size="sm", elem_id="refresh-models")
            card = gr.Markdown(h.model_card(cards[0]["id"] if cards else None), elem_classes=["model-card"])
            prompt = gr.Audio(label="Prompt (optional: upload or record)", sources=["upload", "microphone"],
                              type="filepath", elem_id="prompt-audio")
            with gr.Row():
                trim_start = gr.Number(label="Trim start (s)", value=0.0, minimum=0, step=0.1)
                trim_end = gr.Number(label="Trim end (s, 0 = end)", value=0.0, minimum=0, step=0.1)
            with gr.Accordion("Sampling", open=True):
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p (nucleus)")
                seconds = gr.Slider(0.01, settings.max_seconds, value=min(0.5, settings.max_seconds),
                                    step=0.01, label="Length (s)", elem_id="length-slider")
                n_samples = gr.Slider(1, settings.max_samples, value=1, step=1, label="Number of samples")
                with gr.Row(equal_height=True):
                    seed = gr.Number(label="Seed", value=-1, precision=0, minimum=-1, elem_id="seed")
                    random_seed = gr.Checkbox(label="New random seed each time", value=True)
            estimate = gr.Markdown(h.estimate(None, 0.5, 1), elem_classes=["hint"])
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            examples_box = gr.Column()
        with gr.Column(scale=3, min_width=420):
            summary = gr.Markdown(EMPTY_RESULTS, elem_id="results-summary")
            slots, slot_outputs = [], []
            for i in range(MAX_SLOTS):
                with gr.Group(visible=False, elem_classes=["result-slot"]) as group:
                    title = gr.Markdown()
                    audio = gr.Audio(label=f"Result {i + 1}", type="filepath", interactive=False,
                                     buttons=["download"], elem_id=f"result-audio-{i}")
                    plot = gr.Plot(label="Log-mel spectrogram", elem_id=f"result-plot-{i}")
                    with gr.Row(equal_height=True):
                        files = gr.File(label="WAV (16-bit PCM) + params JSON", file_count="multiple",
                                        interactive=False, scale=3)
                        cont = gr.Button("Continue this result", scale=1, size="sm")
                slots.append((group, cont))
                slot_outputs += [group, title, audio, plot, files]
            with gr.Accordion("All files and details", open=False):
                all_files = gr.File(label="All results", file_count="multiple", interactive=False)
                results = gr.JSON(label="Results (JSON)", open=False)
            api_continue = gr.Button(visible=False)

    with examples_box:
        rows = [[str(ASSETS / f), 0.0, 0.0] for f, _ in EXAMPLES if (ASSETS / f).is_file()]
        shipped = any(c["shipped"] for c in cards)
        if rows:  # with a shipped model, clicking an example shows its continuation, generated once
            gr.Examples(rows, inputs=[prompt, trim_start, trim_end], label="Example prompts",
                        example_labels=[d for f, d in EXAMPLES if (ASSETS / f).is_file()],
                        fn=h.example if shipped else None, outputs=[all_files, results] if shipped else None,
                        cache_examples=shipped, cache_mode="lazy" if shipped else None,
                        api_name="example", api_visibility="undocumented")

    gen_inputs = [model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed]
    limits = dict(concurrency_limit=settings.concurrency, concurrency_id="generation")
    refresh.click(h.model_picker, [model], [model, card], api_name="refresh_models", queue=False)
    model.change(h.model_card, [model], [card], api_name="model_card", queue=False)
    model.change(h.sampling_defaults, [model], [temperature, top_p], api_name="sampling_defaults", queue=False)
    for comp in (model, seconds, n_samples):
        comp.change(h.estimate, [model, seconds, n_samples], [estimate], api_visibility="undocumented",
                    queue=False, show_progress="hidden")
    go = generate_btn.click(h.roll_seed, [random_seed, seed], [seed], api_name="roll_seed", queue=False,
                            api_visibility="undocumented")
    go.then(h.generate, gen_inputs, [all_files, results], api_name="generate", scroll_to_output=True,
            **limits).then(h.estimate, [model, seconds, n_samples], [estimate], queue=False,
                           api_visibility="undocumented")
    api_continue.click(h.continue_clip, [model, prompt, temperature, top_p, seconds, n_samples, seed],
                       [all_files, results], api_name="continue", **limits)
    stop_btn.click(h.stop, None, None, api_name="stop", queue=False)
    results.change(h.render, [results, all_files], [summary, *slot_outputs], api_name="render_results",
                   api_visibility="undocumented", show_progress="hidden")
    for i, (_, cont) in enumerate(slots):
        cont.click(h.result_as_prompt, [results, all_files, gr.State(i)], [prompt, trim_start, trim_end],
                   api_name=f"continue_result_{i + 1}", api_visibility="undocumented", queue=False)
    return {"model": model, "card": card, "handlers": h}

"""Generate tab: model picker with its card, prompt (upload / microphone, trimmed), sampling settings,
Generate / Stop, and up to MAX_SLOTS results (audio, log-mel spectrogram, NLL, WAV + params download,
"Continue this result").

Endpoints (gradio_client): /generate and /continue return (files, results JSON); /stop; /list_models is
wired in playground.app. The UI renders results from the JSON (/render_results), so the browser and API
clients go through the same generation code.
"""
from __future__ import annotations

import contextvars
import logging
import queue
import shutil
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from playground import audio_io, plots, services

log = logging.getLogger(__name__)
MAX_SLOTS = 8
STREAMING = shutil.which("ffmpeg") is not None  # Gradio encodes a streamed audio output with ffmpeg
STREAM_BLOCK_S = 0.5  # audio per streamed chunk: the player starts after the first one
BUSY_NOTE = ("**A generation is already running on this page**: wait for it to finish, or press Stop. "
             "(This click was ignored; the seed box is unchanged.)")
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMPTY_RESULTS = ("*Results appear here: audio, a log-mel spectrogram with the prompt/continuation boundary, "
                 "NLL, and a WAV + params download for each sample.*")
EXAMPLES = [("digit_seven.wav", "spoken digit 'seven' (espeak-ng)"),
            ("digit_three.wav", "spoken digit 'three' (espeak-ng)"),
            ("piano_phrase.wav", "piano phrase (FluidR3_GM)")]
EXAMPLE_DATA = {"digit_seven.wav": "sc09-synth", "digit_three.wav": "sc09-synth",
                "piano_phrase.wav": "piano-synth"}  # the data set of the model that continues each example


def lenient(slider: gr.Slider) -> gr.Slider:
    """Let values typed outside the slider's range reach the handlers, which say what is allowed here and set
    it (`within`), instead of failing in Gradio's preprocessing (an error badge and a logged traceback) and being
    clamped without a word when the box loses focus. (Not a subclass: Gradio writes a .pyi beside those.)"""
    slider.preprocess = lambda v: v if v is None else gr.Number.round_to_precision(v, slider.precision)
    return slider


def within(value, low: float, high: float, what: str):
    """A slider value typed outside [low, high]: a warning naming the limits, and the nearest allowed value
    for the slider; gr.skip() when it is inside."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return gr.skip()
    if low <= v <= high:
        return gr.skip()
    allowed = min(max(v, low), high)
    gr.Warning(f"{what} {v:g} is outside what this server allows ({low:g} to {high:g}); it is set to {allowed:g}.")
    return allowed


def user_error(message: str, where="") -> gr.Error:
    """The gr.Error for a refused request: its message goes to the user, one line (no traceback) to the log."""
    log.info("refused %s: %s", where, message[:200])
    return gr.Error(message, print_exception=False)


def call(fn, *args, **kwargs):
    """Run a service call; user errors -> gr.Error with their message, anything else -> gr.Error + log.
    With Settings among the arguments, messages carry no server folders in public mode (services.redact)."""
    settings = next((a for a in args if isinstance(a, services.Settings)), None)

    def shown(text: str) -> str:
        return services.redact(settings, text) if settings is not None else text

    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except (services.ServiceError, audio_io.AudioInputError) as exc:
        raise user_error(shown(str(exc)), getattr(fn, "__name__", fn)) from None
    except Exception as exc:  # noqa: BLE001 - the UI edge: log the trace, tell the user in one line
        log.exception("%s failed", getattr(fn, "__name__", fn))
        raise gr.Error(f"Something went wrong ({type(exc).__name__}: {shown(str(exc))}). The app is still "
                       "running; try again or pick another model.", print_exception=False) from exc


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
            return f"**Cannot use this model:** {services.redact(self.settings, str(exc))}"

    def sampling_defaults(self, model_id):
        """The temperature and top-p the model's card recommends (unchanged sliders when it has none)."""
        try:
            rec = services.find_model(self.settings, model_id)["sampling"] if model_id else None
        except ValueError:
            rec = None
        if not rec:
            return gr.skip(), gr.skip()
        return rec["temperature"], rec["top_p"]

    def estimate(self, model_id, seconds, n_samples, prompt=None) -> str:
        """The limits here and the expected wait (prompt read + sampling) at this model's measured speeds."""
        st = self.settings
        seconds, n_samples = min(float(seconds or 0), st.max_seconds), min(int(n_samples or 1), st.max_samples)
        prompt_s = audio_io.duration(prompt) if prompt else 0.0
        est = services.estimate_seconds(st, model_id, seconds, n_samples, prompt_seconds=prompt_s)
        cap = f"Length limit here: {st.max_seconds:g} s, up to {st.max_samples} samples."
        if services.warming_up():
            return (f"{cap} **Preparing the generation engine** (compiling kernels once after install, about "
                    "20 s); a Generate click now waits for it.")
        if est is None:
            return f"{cap} The first request also loads (and compiles) the model."
        about = "under a second" if est < 1 else f"about {est:.0f} s"
        what = f"reading the {prompt_s:.1f}-s prompt and sampling" if prompt_s else "sampling"
        return f"{cap} Expected time for {what}, at this model's last measured speed: {about}."

    def warmup_tick(self, model_id, seconds, n_samples, prompt):
        """Timer while the engine compiles at start-up: refresh the hint, stop ticking once it is ready."""
        return self.estimate(model_id, seconds, n_samples, prompt), gr.Timer(active=services.warming_up())

    def _run(self, model_id, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
             request: gr.Request | None, progress, continue_only: bool, **extra):
        session = request.session_hash if request is not None and request.session_hash else ""
        fn = services.continue_clip if continue_only else services.generate_clips
        result = call(fn, self.settings, model_id, prompt, trim_start=trim_start or 0.0,
                      trim_end=trim_end or 0.0, temperature=temperature, top_p=top_p, seconds=seconds,
                      n_samples=n_samples, seed=seed, session=session,
                      progress=lambda frac, msg: progress(frac, desc=msg), **extra)
        for warning in result["warnings"]:
            gr.Warning(warning)
        return result["files"], result

    def generate(self, model, prompt=None, trim_start=0.0, trim_end=0.0, temperature=1.0, top_p=1.0, seconds=1.0,
                 n_samples=1, seed=-1, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
        """Generate n_samples clips after an optional prompt (seed -1 = random; the seed used is in the
        results). Returns (files, results JSON)."""
        return self._run(model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
                         request, progress, continue_only=False)

    def generate_from_page(self, model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed,
                           random_seed, until_stop, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """The Generate button: a fresh random seed when ticked, else the one in the box (the seed box is only
        ever set from a result, by render, so it always shows the seed of the audio shown). Streams sample 1
        into the live player while it is made (when ffmpeg is there for Gradio's stream encoder), then yields
        (files, results JSON, summary line, live): the progress bar shows on the summary, in view."""
        session = request.session_hash if request is not None and request.session_hash else ""
        blocks: queue.Queue = queue.Queue()
        box: dict = {}

        def work():
            try:
                box["out"] = self._run(model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples,
                                       -1 if random_seed else seed, request, progress, continue_only=False,
                                       on_audio=blocks.put if STREAMING else None, until_stop=bool(until_stop))
            except BaseException as exc:  # noqa: BLE001 - handed to the request's thread below
                box["error"] = exc
            finally:
                blocks.put(None)

        # The worker carries this request's context, so gr.Progress / gr.Warning reach this page from it.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                                  name="generate-request")
        try:
            worker.start()
            pending, rate = [], services.find_model(self.settings, model)["sample_rate"] if model else 16000
            while (block := blocks.get()) is not None:
                pending.append(block[0])
                if sum(len(b) for b in pending) >= STREAM_BLOCK_S * rate:
                    yield gr.skip(), gr.skip(), gr.skip(), (rate, audio_io.to_pcm16(np.concatenate(pending)))
                    pending = []
            if pending:
                yield gr.skip(), gr.skip(), gr.skip(), (rate, audio_io.to_pcm16(np.concatenate(pending)))
            worker.join()
        except (ValueError, services.ServiceError):
            worker.join()  # an unknown model: the worker reports it
        finally:
            if worker.is_alive():  # the page went away mid-stream: stop the generation
                services.request_stop(session)
            services.SESSIONS.click_done(session)
        if "error" in box:
            raise box["error"]
        files, result = box["out"]
        yield files, result, self._summary(result), gr.skip()

    @staticmethod
    def busy_note(request: gr.Request):
        """Runs at once on every Generate click (not queued): when this page's previous generation is still
        running (the browser then drops the click), the hint under the settings says so."""
        if services.SESSIONS.click(request.session_hash or ""):
            return gr.skip()
        return BUSY_NOTE

    def check_prompt(self, prompt):
        """On upload / recording: read the clip now, so a file that is not usable audio is reported at once
        and cleared from the player (which could not play it), ready for the next upload."""
        if not prompt:
            return gr.skip()
        try:
            gr.Info(services.check_prompt(self.settings, prompt))
        except audio_io.AudioInputError as exc:
            log.info("refused prompt upload: %s", str(exc)[:200])
            gr.Warning(services.redact(self.settings, str(exc)))
            return None
        return gr.skip()

    def continue_clip(self, model, audio, temperature=1.0, top_p=1.0, seconds=1.0, n_samples=1, seed=-1,
                      request: gr.Request = None, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
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
        """(results JSON, its files) -> updates for the summary, every result slot and the seed box (the seed
        of the audio shown)."""
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
        out.append(results["seed"] if samples else gr.skip())
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
        """Continuation of an example prompt by the shipped model trained on its kind of audio (cached after
        the first click). Returns (files, results JSON, that model's id for the picker)."""
        shipped = [c for c in services.list_models(self.settings) if c["shipped"]]
        if not shipped:
            raise user_error("No shipped model is available for the examples.", "example")
        wanted = EXAMPLE_DATA.get(Path(str(prompt)).name)
        card = next((c for c in shipped if c.get("dataset") == wanted), shipped[0])
        result = call(services.generate_clips, self.settings, card["id"], prompt, trim_start=trim_start,
                      trim_end=trim_end, seconds=min(1.0, self.settings.max_seconds), seed=0,
                      progress=lambda frac, msg: progress(frac, desc=msg))
        return result["files"], result, card["id"]


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
                refresh = gr.Button("Refresh", scale=0, min_width=80, size="sm", elem_id="refresh-models")
            card = gr.Markdown(h.model_card(cards[0]["id"] if cards else None), elem_classes=["model-card"])
            prompt = gr.Audio(label="Prompt (optional: upload or record)", sources=["upload", "microphone"],
                              type="filepath", elem_id="prompt-audio")
            with gr.Row():
                trim_start = gr.Number(label="Trim start (s)", value=0.0, minimum=0, step=0.1)
                trim_end = gr.Number(label="Trim end (s, 0 = end)", value=0.0, minimum=0, step=0.1)
            with gr.Accordion("Sampling", open=True):
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p (nucleus)")
                seconds = lenient(gr.Slider(0.01, settings.max_seconds, value=min(0.5, settings.max_seconds),
                                            step=0.01, label=f"Length (s, at most {settings.max_seconds:g} here)",
                                            elem_id="length-slider"))
                until_stop = gr.Checkbox(label=f"Until I press Stop (at most {settings.max_open_seconds:g} s)",
                                         value=False, elem_id="until-stop")
                n_samples = lenient(gr.Slider(1, settings.max_samples, value=1, step=1,
                                      label=f"Number of samples (at most {settings.max_samples})"))
                with gr.Row(equal_height=True):
                    seed = gr.Number(label="Seed", value=-1, precision=0, minimum=-1, elem_id="seed")
                    random_seed = gr.Checkbox(label="New random seed each time (the box shows the last one used)",
                                              value=True)
            estimate = gr.Markdown(h.estimate(None, 0.5, 1), elem_classes=["hint"], elem_id="estimate")
            warmup_timer = gr.Timer(1.0, active=services.warming_up())
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            examples_box = gr.Column()
        with gr.Column(scale=3, min_width=420):
            live = gr.Audio(label="Live: sample 1 while it is generated", streaming=True, autoplay=True,
                            interactive=False, visible=STREAMING, elem_id="live-audio")
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
            api_generate, api_continue = gr.Button(visible=False), gr.Button(visible=False)

    with examples_box:
        rows = [[str(ASSETS / f), 0.0, 0.0] for f, _ in EXAMPLES if (ASSETS / f).is_file()]
        shipped = any(c["shipped"] for c in cards)
        if rows:  # with a shipped model, clicking an example shows its continuation, generated once
            gr.Examples(rows, inputs=[prompt, trim_start, trim_end], label="Example prompts",
                        example_labels=[d for f, d in EXAMPLES if (ASSETS / f).is_file()],
                        fn=h.example if shipped else None,
                        outputs=[all_files, results, model] if shipped else None,
                        cache_examples=shipped, cache_mode="lazy" if shipped else None,
                        api_name="example", api_visibility="undocumented")

    gen_inputs = [model, prompt, trim_start, trim_end, temperature, top_p, seconds, n_samples, seed]
    limits = dict(concurrency_limit=settings.concurrency, concurrency_id="generation")
    refresh.click(h.model_picker, [model], [model, card], api_name="refresh_models", queue=False)
    model.change(h.model_card, [model], [card], api_name="model_card", queue=False)
    model.change(h.sampling_defaults, [model], [temperature, top_p], api_name="sampling_defaults", queue=False)
    seconds.change(lambda v: within(v, 0.01, settings.max_seconds, "Length (s)"), [seconds], [seconds],
                   api_name="check_length", api_visibility="undocumented", concurrency_limit=None,
                   concurrency_id="notes", show_progress="hidden")  # queued: toasts travel with the queue
    n_samples.change(lambda v: within(v, 1, settings.max_samples, "Number of samples"), [n_samples], [n_samples],
                     api_name="check_samples", api_visibility="undocumented", concurrency_limit=None,
                     concurrency_id="notes", show_progress="hidden")
    estimate_inputs = [model, seconds, n_samples, prompt]
    for comp in (model, seconds, n_samples, prompt):
        comp.change(h.estimate, estimate_inputs, [estimate], api_visibility="undocumented",
                    queue=False, show_progress="hidden")
    warmup_timer.tick(h.warmup_tick, estimate_inputs, [estimate, warmup_timer], api_visibility="undocumented",
                      queue=False, show_progress="hidden")
    generate_btn.click(h.busy_note, None, [estimate], api_name="busy_note", api_visibility="undocumented",
                       queue=False, show_progress="hidden")
    generate_btn.click(h.generate_from_page, [*gen_inputs, random_seed, until_stop],
                       [all_files, results, summary, live],
                       api_name="generate_from_page", api_visibility="undocumented",
                       **limits).then(h.estimate, estimate_inputs, [estimate], queue=False,
                                      api_visibility="undocumented")
    api_generate.click(h.generate, gen_inputs, [all_files, results], api_name="generate", **limits)
    prompt.upload(h.check_prompt, [prompt], [prompt], api_name="check_prompt", api_visibility="undocumented",
                  concurrency_limit=None, concurrency_id="notes", show_progress="hidden")
    prompt.stop_recording(h.check_prompt, [prompt], [prompt], api_visibility="undocumented",
                          concurrency_limit=None, concurrency_id="notes", show_progress="hidden")
    api_continue.click(h.continue_clip, [model, prompt, temperature, top_p, seconds, n_samples, seed],
                       [all_files, results], api_name="continue", **limits)
    stop_btn.click(h.stop, None, None, api_name="stop", queue=False)
    results.change(h.render, [results, all_files], [summary, *slot_outputs, seed], api_name="render_results",
                   api_visibility="undocumented", show_progress="hidden")
    for i, (_, cont) in enumerate(slots):
        cont.click(h.result_as_prompt, [results, all_files, gr.State(i)], [prompt, trim_start, trim_end],
                   api_name=f"continue_result_{i + 1}", api_visibility="undocumented", queue=False)
    return {"model": model, "card": card, "handlers": h}

"""Listen: classroom listening tests (blind MOS, the SaShiMi paper's protocol) in two places of one app.

- Teacher tab (:func:`build_listen_tab`, inside the playground's tabs): behind the teacher password, build
  a test (systems, clips, scales, gold checks) in the background with progress, get its join code and rater
  link, watch ratings arrive, see MOS ± 95% CI, pairwise tests, plot, CSV and a markdown table.
- Rater page (:func:`build_rater_page`, the ``/rate`` route of the same server, no navbar and nothing from
  the rest of the playground): join with the code, rate clips one screen at a time in a per-rater random
  blind order; the rater id lives in the browser (gr.BrowserState), so a reload resumes.

:func:`build_rater_app` is a listening-only app (the teacher tab as its home page plus ``/rate``), used by
``python -m playground.listening serve`` and the tests. Handlers call playground.listening over plain values;
nothing here imports torch or computes statistics.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from playground import services
from playground.listening import catalog, results, session
from playground.listening.builder import BuildRegistry
from playground.listening.config import (
    MAX_SCALES,
    SCALE_PRESETS,
    ListeningError,
    ListenSettings,
    TestSpec,
    scales_from_table,
)
from playground.listening.results import counted
from playground.ui_generate import user_error

log = logging.getLogger(__name__)
RATE_PATH = "rate"
STORAGE_KEY = "sashimi-listening-raters"
RATER_OUTPUTS = 7 + MAX_SCALES + 7  # the rater page's outputs: see build_rater_page
JOINED_SESSIONS = 10_000  # page sessions remembered as having pressed Join (`RaterHandlers.on_load`)
RATER_HINT = 7 + MAX_SCALES + 1  # ... and the hint line among them
SCALE_HEADERS = ["id", "label", "question", "anchors 1..5 (comma-separated)"]
ANCHOR_CHOICES = [("No anchor", "none"), ("White noise", "noise"), ("First model at temperature 2.0", "temperature")]
TEACHER_HELP = """\
**Blind listening tests (MOS)** as in the SaShiMi paper: raters hear clips from each system in random order
without knowing which system made them and rate them 1-5 (music: fidelity and musicality; speech: quality and
intelligibility). Build a test, give the class its join code, then read the results here."""


def call(fn, *args, **kwargs):
    """Run a listening call; user errors become gr.Error with their message, anything else is logged."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except ListeningError as exc:
        raise user_error(str(exc), getattr(fn, "__name__", fn)) from None
    except Exception as exc:  # noqa: BLE001 - the UI edge: log the trace, tell the user in one line
        log.exception("%s failed", getattr(fn, "__name__", fn))
        raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}).") from exc


def _host(request: gr.Request | None) -> str | None:
    return request.client.host if request is not None and request.client is not None else None


def export_base() -> Path:
    """A temporary folder for this process's CSV exports (removed at exit; results.export_folder deletes
    exports older than an hour each time a new one is made)."""
    return services.process_temp_dir("listening-exports")


def listen_settings(ctx=None) -> ListenSettings:
    """ListenSettings from a playground services.Settings (or None: environment only), or as given."""
    return ctx if isinstance(ctx, ListenSettings) else ListenSettings.create(ctx)


# ----------------------------------------------------------------------------------------------- teacher
class TeacherHandlers:
    """The teacher tab's handlers; every one checks the password (or localhost access) first."""

    def __init__(self, settings: ListenSettings, builds: BuildRegistry | None = None):
        self.settings = settings
        self.builds = builds or BuildRegistry()

    def _auth(self, password, request) -> None:
        call(session.teacher_allowed, self.settings, password, _host(request))

    def unlock(self, password, request: gr.Request):
        """Check the password; show the teacher tools with the current models, data folders and tests."""
        self._auth(password, request)
        models = call(catalog.available_models, self.settings.model_roots)
        data = catalog.data_folders(self.settings.data_dir)
        return (gr.Column(visible=True), "Unlocked.",
                gr.CheckboxGroup(choices=[m["name"] for m in models], value=[]),
                gr.Dropdown(choices=data, value=data[0] if data else None), self._picker(None))

    def _picker(self, current):
        tests = catalog.list_tests(self.settings.root)
        choices = [(f"{t['title']} · {t['code'] or '…'} · {t['state']}", t["id"]) for t in tests]
        ids = [t["id"] for t in tests]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    def tests(self, password, current, request: gr.Request):
        """Refresh the list of tests."""
        self._auth(password, request)
        return self._picker(current)

    def start_build(self, password, title, kind, systems, real_dir, anchor, clips, seconds, temperature, prompt,
                    prompt_seconds, scales_table, gold_noise, gold_real, gold_tolerance, seed, instructions,
                    max_raters=0, joins_per_host=0, request: gr.Request = None):
        """Check the settings and start building the test in the background; returns its id. max_raters and
        joins_per_host 0 (or empty): the app's defaults."""
        self._auth(password, request)
        scales = call(scales_from_table, scales_table) if kind == "custom" else []
        spec = TestSpec(title=str(title or "").strip(), kind=kind, models=list(systems or []),
                        real_dir=(str(real_dir).strip() or None) if real_dir else None, anchor=anchor,
                        clips_per_system=int(clips or 0), clip_seconds=float(seconds or 0),
                        temperature=float(1.0 if temperature is None else temperature), prompt_file=prompt or None,
                        prompt_seconds=float(prompt_seconds or 1.0), scales=scales, gold_noise=int(gold_noise or 0),
                        gold_real=int(gold_real or 0), gold_tolerance=int(gold_tolerance or 0), seed=int(seed or 0),
                        instructions=str(instructions or ""), max_raters=int(max_raters or 0),
                        joins_per_host=int(joins_per_host or 0))
        job = call(self.builds.start, spec, self.settings.root, model_roots=self.settings.model_roots,
                   limits=self.settings.limits)
        return (f"Building **{spec.title}** ({spec.n_clips()} clips)…", gr.Timer(active=True), job["test_id"],
                self._picker(job["test_id"]))

    def build_status(self, password, test_id, request: gr.Request):
        """Progress of the build; when it ends the timer stops and the test's join code is shown."""
        self._auth(password, request)
        if not test_id:
            return "", gr.Timer(active=False), gr.skip(), gr.skip(), gr.skip()
        status = catalog.read_status(catalog.test_dir(self.settings.root, test_id))
        if status["state"] == "building":
            text = f"**building** — {int(100 * status['progress'])}% · {status['message']}"
            return text, gr.Timer(active=True), gr.skip(), gr.skip(), gr.skip()
        text = f"**{status['state']}** — {status['message']}"
        if status["state"] == "ready":
            text = f"**Ready.** {status['message']} Join code **{status.get('code', '')}**."
        return (text, gr.Timer(active=False), self._picker(test_id), *self.test_info(password, test_id, request))

    def cancel_build(self, password, test_id, request: gr.Request) -> str:
        self._auth(password, request)
        return "Stopping the build…" if test_id and self.builds.cancel(test_id) else "No build is running."

    def test_info(self, password, test_id, request: gr.Request):
        """Join code, rater links, state and counts of the selected test (markdown) and its open flag."""
        self._auth(password, request)
        if not test_id:
            return "No test yet: build one above.", gr.Checkbox()
        folder = call(catalog.test_dir, self.settings.root, test_id)
        status = catalog.read_status(folder)
        if status["state"] != "ready":
            return f"**{status['state']}** — {status['message']}", gr.Checkbox(interactive=False)
        o = results.overview(folder)
        scheme = (request.headers.get("x-forwarded-proto") if request else None) or "http"
        links = catalog.join_links(o["code"], request.headers.get("host") if request else None, scheme)
        text = (f"## Join code: `{o['code']}`\n\nRaters open "
                + " or ".join(f"[{u}]({u})" for u in links)
                + " (phones work; the app must be started with `--host 0.0.0.0` for other devices).\n\n"
                f"{counted(o['n_clips'], 'clip')} · {counted(o['n_systems'], 'system')} · "
                f"{counted(o['joined'], 'rater')} joined, {o['finished']} finished · "
                f"{counted(o['n_ratings'], 'rating')}.")
        return text, gr.Checkbox(value=o["open"], interactive=True)

    def set_open(self, password, test_id, is_open, request: gr.Request) -> str:
        self._auth(password, request)
        folder = call(catalog.test_dir, self.settings.root, test_id)
        call(results.set_open, folder, bool(is_open))
        return "Accepting ratings." if is_open else "Closed: raters cannot add ratings."

    def results(self, password, test_id, ci, exclude_flagged=False, request: gr.Request = None):
        """MOS table, pairwise tests, plot, paper-style markdown (with the flagged raters) and CSV files of a
        test; exclude_flagged leaves raters flagged as suspicious out of the numbers."""
        self._auth(password, request)
        if not test_id:
            raise gr.Error("Pick a test first.")
        folder = call(catalog.test_dir, self.settings.root, test_id)
        summary = call(results.summarize, folder, exclude_flagged=bool(exclude_flagged))
        out = call(results.export_folder, export_base(), test_id)
        files = call(results.export, folder, summary, out)
        r = summary["raters"]
        info = (f"**{summary['n_ratings_kept']}** ratings used of {summary['n_ratings']} · "
                f"{counted(r['joined'], 'rater')} joined, {r['finished']} finished · "
                f"**{len(r['excluded'])}** excluded by gold checks "
                f"(more than {r['gold_tolerance']} failed) · **{results.flag_note(summary)}**. Pairwise: paired "
                "t-tests on per-rater means, Holm-Bonferroni corrected per scale.\n" + results.flagged_list(summary))
        return (info, results.summary_rows(summary), results.pairwise_rows(summary),
                results.figure(summary, "bootstrap" if ci == "bootstrap" else "t"),
                results.markdown(summary, ci or "t"), [str(f) for f in files])

    def delete(self, password, test_id, confirm, request: gr.Request):
        self._auth(password, request)
        if not confirm:
            raise gr.Error("Tick the confirmation box first.")
        call(catalog.delete_test, self.settings.root, test_id)
        return f"Deleted {test_id}.", self._picker(None), gr.Checkbox(value=False)


def build_listen_tab(ctx=None, builds: BuildRegistry | None = None) -> dict:
    """Lay out the teacher tab in the current Blocks context (e.g. inside gr.Tab("Listen")) and wire its
    events. ctx: the playground's services.Settings, a ListenSettings, or None (environment)."""
    h = TeacherHandlers(listen_settings(ctx), builds)
    gr.Markdown(TEACHER_HELP)
    with gr.Row(equal_height=True):
        password = gr.Textbox(label="Teacher password", type="password", scale=3, elem_id="listen-password",
                              placeholder="set with SASHIMI_TEACHER_PASSWORD or --teacher-password-file")
        unlock = gr.Button("Unlock", variant="primary", scale=1, elem_id="listen-unlock")
    access = gr.Markdown(elem_id="listen-access")
    with gr.Column(visible=False) as tools:
        with gr.Accordion("1 · Build a test", open=True):
            with gr.Row():
                title = gr.Textbox(label="Title (raters see it)", value="Listening test")
                kind = gr.Radio([("Music: fidelity + musicality", "music"),
                                 ("Speech: quality + intelligibility", "speech"), ("Custom scales", "custom")],
                                value="music", label="Scales")
            systems = gr.CheckboxGroup(label="Models (checkpoints)", choices=[], elem_id="listen-systems")
            with gr.Row():
                real_dir = gr.Dropdown(label="Real data (folder of audio files; empty = none)", choices=[],
                                       allow_custom_value=True)
                anchor = gr.Radio(ANCHOR_CHOICES, value="noise", label="Low anchor")
            with gr.Row():
                clips = gr.Number(label="Clips per system", value=6, precision=0, minimum=1, elem_id="listen-clips")
                seconds = gr.Number(label="Clip length (s)", value=2.0, minimum=0.05, elem_id="listen-seconds")
                temperature = gr.Number(label="Sampling temperature", value=1.0, minimum=0)
                seed = gr.Number(label="Seed", value=0, precision=0)
            with gr.Accordion("Prompt (optional: models continue it; every clip starts with it)", open=False):
                with gr.Row():
                    prompt = gr.Audio(label="Prompt", sources=["upload"], type="filepath")
                    prompt_seconds = gr.Number(label="Prompt length used (s)", value=1.0, minimum=0.05)
            scales = gr.Dataframe(headers=SCALE_HEADERS, column_count=(4, "fixed"), type="array", visible=False,
                                  label="Custom scales (1-5)", interactive=True,
                                  value=[[s.id, s.label, s.question, ", ".join(s.anchors)]
                                         for s in SCALE_PRESETS["music"]])
            with gr.Row():
                gold_noise = gr.Number(label="Gold: noise clips (must be ≤ 2)", value=1, precision=0, minimum=0)
                gold_real = gr.Number(label="Gold: real clips (must be ≥ 3)", value=0, precision=0, minimum=0)
                gold_tol = gr.Number(label="Gold failures tolerated", value=0, precision=0, minimum=0)
            with gr.Row():
                limits = h.settings.limits
                max_raters = gr.Number(label=f"Most raters (0: {limits.max_raters})", value=0, precision=0,
                                       minimum=0, maximum=limits.max_raters, elem_id="listen-max-raters")
                joins_per_host = gr.Number(label=f"New raters per network address per hour (0: "
                                                 f"{limits.joins_per_host}; raise it when the class shares one "
                                                 "address)", value=0, precision=0, minimum=0,
                                           maximum=limits.max_raters, elem_id="listen-joins-per-host")
            instructions = gr.Textbox(label="Instructions for raters", lines=2,
                                      value="Use headphones. Play each clip to the end, then rate it.")
            with gr.Row():
                build = gr.Button("Build test", variant="primary", elem_id="listen-build")
                cancel = gr.Button("Stop build", variant="stop")
            build_md = gr.Markdown(elem_id="listen-build-status")
            build_id = gr.State(None)
            timer = gr.Timer(1.0, active=False)
        with gr.Accordion("2 · Tests and results", open=True):
            with gr.Row(equal_height=True):
                picker = gr.Dropdown(label="Test", choices=[], scale=4, allow_custom_value=True,
                                     elem_id="listen-test-picker")
                refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80)
            test_md = gr.Markdown(elem_id="listen-test-info")
            with gr.Row():
                is_open = gr.Checkbox(label="Accepting ratings", value=True)
                ci = gr.Radio([("t-interval (paper)", "t"), ("two-way bootstrap", "bootstrap")], value="t",
                              label="Interval (markdown table and plot)")
                exclude_flagged = gr.Checkbox(label="Leave out flagged raters", value=False,
                                              elem_id="listen-exclude-flagged")
                live = gr.Checkbox(label="Refresh every 5 s", value=False)
            show = gr.Button("Show results", variant="primary", elem_id="listen-show-results")
            info = gr.Markdown(elem_id="listen-results-info")
            table = gr.Dataframe(headers=results.SUMMARY_HEADERS, interactive=False, elem_id="listen-summary")
            plot = gr.Plot(label="MOS ± 95% CI")
            pairs = gr.Dataframe(headers=results.PAIRWISE_HEADERS, interactive=False, label="Pairwise comparisons")
            markdown = gr.Code(label="Copy as table (markdown)", language="markdown", interactive=False,
                               elem_id="listen-markdown")
            files = gr.File(label="CSV export (raw ratings, summary)", file_count="multiple")
            live_timer = gr.Timer(5.0, active=False)
            with gr.Accordion("Delete this test", open=False):
                confirm = gr.Checkbox(label="I understand this deletes the clips and all ratings")
                delete = gr.Button("Delete test", variant="stop", size="sm")
                delete_md = gr.Markdown()

    kind.change(lambda k: gr.Dataframe(visible=k == "custom"), [kind], [scales], queue=False,
                api_name="listen_custom_scales", api_visibility="undocumented")
    unlock.click(h.unlock, [password], [tools, access, systems, real_dir, picker], api_name="listen_unlock")
    password.submit(h.unlock, [password], [tools, access, systems, real_dir, picker], api_name="listen_unlock_enter",
                    api_visibility="undocumented")
    build_inputs = [password, title, kind, systems, real_dir, anchor, clips, seconds, temperature, prompt,
                    prompt_seconds, scales, gold_noise, gold_real, gold_tol, seed, instructions, max_raters,
                    joins_per_host]
    build.click(h.start_build, build_inputs, [build_md, timer, build_id, picker], api_name="listen_build")
    timer.tick(h.build_status, [password, build_id], [build_md, timer, picker, test_md, is_open],
               api_name="listen_build_status", show_progress="hidden")
    cancel.click(h.cancel_build, [password, build_id], [build_md], api_name="listen_cancel_build")
    refresh.click(h.tests, [password, picker], [picker], api_name="listen_tests")
    picker.change(h.test_info, [password, picker], [test_md, is_open], api_name="listen_test_info")
    is_open.input(h.set_open, [password, picker, is_open], [test_md], api_name="listen_set_open")
    result_outputs = [info, table, pairs, plot, markdown, files]
    show.click(h.results, [password, picker, ci, exclude_flagged], result_outputs, api_name="listen_results").then(
        h.test_info, [password, picker], [test_md, is_open], api_name="listen_test_info_after_results",
        api_visibility="undocumented")
    live.change(lambda on: gr.Timer(active=bool(on)), [live], [live_timer], queue=False, api_name="listen_live",
                api_visibility="undocumented")
    live_timer.tick(h.results, [password, picker, ci, exclude_flagged], result_outputs, api_name="listen_results_live",
                    api_visibility="undocumented", show_progress="hidden")
    delete.click(h.delete, [password, picker, confirm], [delete_md, picker, confirm], api_name="listen_delete")
    return {"password": password, "tools": tools, "picker": picker, "handlers": h}


# ------------------------------------------------------------------------------------------------- rater
class RaterHandlers:
    """The rater page's handlers. Outputs of every screen change: see ``build_rater_page``."""

    def __init__(self, settings: ListenSettings):
        self.settings = settings
        self._joined: OrderedDict[str, None] = OrderedDict()  # page sessions that pressed Join (newest last)
        self._lock = threading.Lock()

    def _note_join(self, request) -> None:
        key = getattr(request, "session_hash", None)
        if key:
            with self._lock:
                self._joined[key] = None
                self._joined.move_to_end(key)
                while len(self._joined) > JOINED_SESSIONS:
                    self._joined.popitem(last=False)

    def _joined_in(self, request) -> bool:
        key = getattr(request, "session_hash", None)
        with self._lock:
            return bool(key) and key in self._joined

    def _render(self, screen: session.Screen, store: dict | None) -> tuple:
        store = dict(store or {})
        store[screen.code] = screen.rater_id
        radios = []
        for i in range(MAX_SCALES):
            if i < len(screen.scales) and not screen.finished:
                s = screen.scales[i]
                radios.append(gr.Radio(choices=s["choices"], value=None, label=s["label"], info=s["question"],
                                       visible=True))
            else:
                radios.append(gr.Radio(choices=[], value=None, visible=False))
        shown = min(screen.position, screen.total)
        pct = 100 * (screen.position - 1) / max(screen.total, 1)
        progress = (f"<div class='listen-progress'><b>{shown} / {screen.total}</b>"
                    f"<div style='background:#ddd;height:6px;border-radius:3px'><div style='width:{pct:.0f}%;"
                    "height:6px;border-radius:3px;background:var(--color-accent)'></div></div></div>")
        done = (f"## Thank you!\n\nYou rated all {screen.total} clips of **{screen.title}**. You can close this "
                "page.") if screen.finished else ""
        hint = "" if screen.finished else (screen.message or "Play the clip to the end, then answer and press "
                                                               "**Submit**.")
        return (gr.Column(visible=False), gr.Column(visible=not screen.finished), done, f"# {screen.title}",
                progress, screen.instructions if screen.position == 1 else "",
                None if screen.finished else screen.audio, *radios,
                gr.Button(interactive=False), hint, screen.code, screen.rater_id, screen.clip_id or "", store,
                screen.code)

    def on_load(self, store, request: gr.Request):
        """Resume the rater remembered by this browser (or named in ?rater=) for ?code=; else prefill the code.

        Without ?code= nothing changes. Its answer never undoes a Join pressed on this page: a student who
        types fast clicks Join before the load's answer arrives on a busy server, and the load's join screen
        used to land after the Join's answer, wiping its message (or its first clip)."""
        params = dict(request.query_params) if request is not None else {}
        code = catalog.normalize_code(params.get("code", ""))
        if not code:
            return self._unchanged()
        rater_id = params.get("rater") or (store or {}).get(code)
        screen = self._join_screen(code, store)
        if rater_id:
            try:
                screen = self._render(session.join(self.settings.root, code, rater_id,
                                                   client_host=_host(request) or "unknown"), store)
            except ListeningError:
                pass
        return self._unchanged() if self._joined_in(request) else screen

    @staticmethod
    def _unchanged() -> tuple:
        return tuple(gr.skip() for _ in range(RATER_OUTPUTS))

    def _join_screen(self, code, store, message: str = "") -> tuple:
        return (gr.Column(visible=True), gr.Column(visible=False), "", "# Listening test", "", "", None,
                *[gr.Radio(visible=False) for _ in range(MAX_SCALES)], gr.Button(interactive=False), message,
                code, "", "", store or {}, code)

    def join(self, code, store, request: gr.Request):
        """Join with a code (resuming this browser's rater for that code when there is one). A refused join
        (unknown code, closed test, limits) shows its message under the code box and leaves the box usable."""
        self._note_join(request)
        code = catalog.normalize_code(code)
        agent = request.headers.get("user-agent", "") if request is not None else ""
        try:
            screen = session.join(self.settings.root, code, (store or {}).get(code), agent,
                                  _host(request) or "unknown")  # every web join counts against its address
        except ListeningError as exc:
            log.info("refused join: %s", str(exc)[:200])
            return self._join_screen(code, store, f"**{exc}**")
        return self._render(screen, store)

    def played(self, code, rater_id, clip_id):
        """The player started: record it (server time) and allow Submit."""
        try:
            session.played(self.settings.root, code, rater_id, clip_id, "play")
        except ListeningError as exc:
            return gr.skip(), f"**{exc}**"
        return gr.Button(interactive=True), "Answer every question, then press **Submit**."

    def paused(self, code, rater_id, clip_id) -> None:
        self._player_event(code, rater_id, clip_id, "pause")

    def ended(self, code, rater_id, clip_id) -> None:
        self._player_event(code, rater_id, clip_id, "stop")

    def _player_event(self, code, rater_id, clip_id, kind: str) -> None:
        try:
            session.played(self.settings.root, code, rater_id, clip_id, kind)
        except ListeningError as exc:  # nothing to show: the next Submit says what is missing
            log.info("refused %s event: %s", kind, str(exc)[:200])

    def rate(self, code, rater_id, clip_id, store, score_1=None, score_2=None, score_3=None, score_4=None):
        """Store this clip's scores (score_i answers the test's i-th scale) and show the next clip. A refused
        answer (too early, a question unanswered) keeps the clip, the answers and Submit, and says why."""
        scores = [score_1, score_2, score_3, score_4][:MAX_SCALES]
        try:
            screen = session.rate(self.settings.root, code, rater_id, clip_id, scores)
        except ListeningError as exc:
            log.info("refused rating: %s", str(exc)[:200])
            return self._message_only(f"**{exc}**")
        return self._render(screen, store)

    @staticmethod
    def _message_only(message: str) -> tuple:
        """Updates for the rater outputs that change only the hint line (every other component as it is)."""
        out = [gr.skip()] * RATER_OUTPUTS
        out[RATER_HINT] = message
        return tuple(out)


# The rater page hides the navbar (no link to the playground); gr.Navbar(visible=False) does not hide it in 6.31.
RATER_CSS = """
.nav-holder {display: none !important;}
#listen-rater {max-width: 640px; margin: 0 auto;}
#listen-rater .listen-progress {font-size: 1.1rem; margin: .25rem 0 .5rem;}
#listen-rater button {min-height: 3rem;}
"""


def build_rater_page(demo: gr.Blocks, ctx=None, path: str = RATE_PATH) -> dict:
    """Add the rater page as route /<path> of demo (call after demo's ``with gr.Blocks()`` block). The page
    holds only rater components, so its HTML and API carry nothing from the rest of the app. Gradio adds
    later events of demo to the last route, so call this after everything else of demo is wired."""
    settings = listen_settings(ctx)
    h = RaterHandlers(settings)
    with demo.route("Rate", f"/{path}", show_in_navbar=False):
        gr.HTML(f"<style>{RATER_CSS}</style>", padding=False)
        store = gr.BrowserState({}, storage_key=STORAGE_KEY, secret=catalog.browser_secret(settings.root))
        code_box, rater_box, clip_box = (gr.Textbox(visible=False, label=n) for n in ("code", "rater", "clip"))
        with gr.Column(elem_id="listen-rater"):
            title = gr.Markdown("# Listening test")
            with gr.Column() as join_col:
                code = gr.Textbox(label="Join code", placeholder="e.g. K7M3QX", max_length=12, elem_id="listen-code")
                join = gr.Button("Join", variant="primary", elem_id="listen-join")
            with gr.Column(visible=False) as rate_col:
                progress = gr.HTML(elem_id="listen-progress")
                instructions = gr.Markdown()
                audio = gr.Audio(label="Clip", type="numpy", interactive=False, buttons=[], elem_id="listen-audio")
                radios = [gr.Radio(visible=False, elem_id=f"listen-scale-{i}") for i in range(MAX_SCALES)]
                submit = gr.Button("Submit", variant="primary", interactive=False, elem_id="listen-submit")
            hint = gr.Markdown(elem_id="listen-hint")
            done = gr.Markdown(elem_id="listen-done")
        outputs = [join_col, rate_col, done, title, progress, instructions, audio, *radios, submit, hint, code_box,
                   rater_box, clip_box, store, code]
        assert len(outputs) == RATER_OUTPUTS and outputs[RATER_HINT] is hint
        demo.load(h.on_load, [store], outputs, api_name="rater_load", queue=False)
        join.click(h.join, [code, store], outputs, api_name="join", queue=False)
        code.submit(h.join, [code, store], outputs, api_name="join_enter", api_visibility="undocumented",
                    queue=False)
        ids = [code_box, rater_box, clip_box]
        audio.play(h.played, ids, [submit, hint], api_name="played", queue=False)
        audio.pause(h.paused, ids, None, api_name="paused", queue=False)
        audio.stop(h.ended, ids, None, api_name="ended", queue=False)
        submit.click(h.rate, [*ids, store, *radios], outputs, api_name="rate", queue=False)
    return {"outputs": outputs, "handlers": h, "audio": audio, "submit": submit}


def build_rater_app(ctx=None) -> gr.Blocks:
    """A listening-only app: the teacher tools at / and the rater page at /rate (not launched)."""
    settings = listen_settings(ctx)
    with gr.Blocks(title="Listening test", analytics_enabled=False) as demo:
        gr.Markdown("# SaShiMi listening tests")
        build_listen_tab(settings)
    build_rater_page(demo, settings)
    demo.queue(default_concurrency_limit=4)
    return demo

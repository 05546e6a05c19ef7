"""Results of a listening test: MOS per system and scale, pairwise comparisons, gold-check exclusions, and
their renderings (table rows, paper-style markdown, CSV files, a plotly bar chart).

Statistics (see stats.py and docs/listening.md):
- MOS = mean of all kept ratings of a system on a scale.
- t-interval: mean ± t·s/√n over those ratings, the interval MOS papers report (treats ratings as independent).
- bootstrap: two-way percentile bootstrap resampling raters and clips, which accounts for ratings of one
  rater or one clip being correlated; the honest interval, usually wider.
- Pairwise: for every pair of systems on a scale, a paired t-test on per-rater means (raters who rated both),
  p-values Holm-Bonferroni corrected within the scale; "significant" = adjusted p < 0.05.
- Gold checks: a rater failing more gold clips than the test's tolerance is excluded from every number; gold
  clips themselves never count towards a system.
- Flags (:func:`rater_flags`): raters whose answering looks scripted or careless (listened to little of the
  clips, answered before the clips could end, the same scores on every clip). Reported with reasons and
  still counted, unless the teacher asks to leave flagged raters out (``exclude_flagged``).
"""
from __future__ import annotations

import csv
import io
import itertools
import secrets
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from playground.listening import catalog, stats
from playground.listening.store import RatingStore

ALPHA = 0.05
LISTEN_FLAG = 0.5  # flag: median (seconds played / clip length) below this
FAST_FLAG = 1.0  # flag: median (first play -> submit, in clip lengths) below this: answered before the clip ended
SAME_SCORES_MIN_CLIPS = 5  # flag: the same scores on every clip, over at least this many clips
EXPORT_MAX_AGE_S = 3600.0


def counted(n: int, noun: str) -> str:
    """'1 rater', '2 raters', '0 raters' (regular English plurals only)."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def gold_check(manifest: dict, ratings: list[dict]) -> dict[str, dict]:
    """Per rater: {checked, failed} over the gold clips they rated."""
    rules = {c["id"]: c["gold"] for c in manifest["clips"] if c.get("gold")}
    out: dict[str, dict] = defaultdict(lambda: {"checked": 0, "failed": 0})
    for r in ratings:
        rule = rules.get(r["clip_id"])
        if rule is None or r["scale"] != rule["scale"]:
            continue
        out[r["rater_id"]]["checked"] += 1
        if not gold_passed(rule, r["score"]):
            out[r["rater_id"]]["failed"] += 1
    return dict(out)


def gold_passed(rule: dict, score: int) -> bool:
    return rule.get("min", 1) <= score <= rule.get("max", 5)


def excluded_raters(manifest: dict, gold: dict[str, dict]) -> list[str]:
    """Raters who failed more gold checks than the test tolerates."""
    tolerance = int(manifest.get("gold_tolerance", 0))
    return sorted(r for r, g in gold.items() if g["failed"] > tolerance)


def rater_flags(manifest: dict, ratings: list[dict]) -> dict[str, list[str]]:
    """Raters whose answers look scripted or careless -> the reasons (sentences for the teacher):
    median listening time under LISTEN_FLAG of the clip length; median first play -> submit shorter than
    FAST_FLAG clip lengths; the same score on every clip on every scale over >= SAME_SCORES_MIN_CLIPS clips."""
    seconds = {c["id"]: max(float(c["seconds"]), 1e-9) for c in manifest["clips"]}
    by_rater: dict[str, dict[str, dict]] = defaultdict(dict)  # rater -> clip -> {listen, decision, scores}
    for r in ratings:  # listen_s and decision_s are the same on every scale of one clip
        clip = {"listen": r["listen_s"] / seconds[r["clip_id"]], "decision": r["decision_s"] / seconds[r["clip_id"]]}
        by_rater[r["rater_id"]].setdefault(r["clip_id"], clip | {"scores": {}})["scores"][r["scale"]] = r["score"]
    flags = {}
    for rater, rated in by_rater.items():
        reasons = []
        listened = float(np.median([c["listen"] for c in rated.values()]))  # in clip lengths
        if listened < LISTEN_FLAG:
            reasons.append(f"listened to {listened:.0%} of a clip's length (median)")
        decided = float(np.median([c["decision"] for c in rated.values()]))
        if decided < FAST_FLAG:
            reasons.append(f"answered {decided:.0%} of a clip's length after pressing play (median), before the "
                           "clip could end")
        answers = {tuple(sorted(c["scores"].items())) for c in rated.values()}
        if len(rated) >= SAME_SCORES_MIN_CLIPS and len(answers) == 1:
            reasons.append(f"gave the same scores to all {len(rated)} clips")
        if reasons:
            flags[rater] = reasons
    return dict(sorted(flags.items()))


def summarize(folder: Path, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
              exclude_flagged: bool = False) -> dict:
    """Everything the results view shows, as JSON-ready values (see module docstring). Raters failing gold
    checks are always left out; flagged raters only with exclude_flagged (they are reported either way)."""
    folder = Path(folder)
    manifest = catalog.read_manifest(folder)
    store = RatingStore(folder / catalog.DB)
    ratings, raters = store.ratings(), store.raters()
    clips = {c["id"]: c for c in manifest["clips"]}
    gold = gold_check(manifest, ratings)
    excluded = excluded_raters(manifest, gold)
    flagged = rater_flags(manifest, ratings)
    left_out = set(excluded) | (set(flagged) if exclude_flagged else set())
    kept = [r for r in ratings if r["rater_id"] not in left_out and clips[r["clip_id"]]["system"] is not None]
    systems = [s["name"] for s in manifest["systems"]]
    scales = [{"id": s["id"], "label": s["label"]} for s in manifest["scales"]]
    by = defaultdict(list)  # (system, scale) -> ratings
    for r in kept:
        by[clips[r["clip_id"]]["system"], r["scale"]].append(r)
    rows = []
    for system, scale in itertools.product(systems, scales):
        rs = by[system, scale["id"]]
        scores = [r["score"] for r in rs]
        t = stats.t_interval(scores, level)
        b = stats.bootstrap_two_way([r["rater_id"] for r in rs], [r["clip_id"] for r in rs], scores,
                                    n_boot=n_boot, level=level, seed=seed)
        rows.append({"system": system, "scale": scale["id"], "scale_label": scale["label"], "n_ratings": len(rs),
                     "n_raters": len({r["rater_id"] for r in rs}), "n_clips": len({r["clip_id"] for r in rs}),
                     "mos": t.mean, "sd": t.sd, "t_lo": t.lo, "t_hi": t.hi, "t_half": t.half_width,
                     "boot_lo": b.lo, "boot_hi": b.hi})
    n_total = len(clips)
    return {"test_id": manifest["test_id"], "title": manifest["title"], "code": manifest["code"],
            "level": level, "n_boot": n_boot, "seed": seed, "systems": systems, "scales": scales, "rows": rows,
            "pairwise": pairwise(kept, clips, systems, scales, level),
            "raters": {"joined": len(raters), "rated_any": sum(r["n_rated"] > 0 for r in raters),
                       "finished": sum(r["n_rated"] >= n_total for r in raters), "excluded": excluded,
                       "gold": gold, "gold_tolerance": int(manifest.get("gold_tolerance", 0)), "flagged": flagged,
                       "exclude_flagged": bool(exclude_flagged), "counted": len({r["rater_id"] for r in kept}),
                       "max_raters": manifest.get("max_raters")},
            "n_ratings": len(ratings), "n_ratings_kept": len(kept), "open": store.is_open(),
            "computed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def pairwise(kept: list[dict], clips: dict, systems: list[str], scales: list[dict], level: float) -> list[dict]:
    """Paired t-tests on per-rater means for every pair of systems, Holm-corrected within each scale."""
    out = []
    for scale in scales:
        means: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # system -> rater -> scores
        for r in kept:
            if r["scale"] == scale["id"]:
                means[clips[r["clip_id"]]["system"]][r["rater_id"]].append(r["score"])
        tests = []
        for a, b in itertools.combinations(systems, 2):
            both = sorted(set(means[a]) & set(means[b]))
            res = stats.paired_t_test([np.mean(means[a][r]) for r in both], [np.mean(means[b][r]) for r in both],
                                      level)
            tests.append({"scale": scale["id"], "a": a, "b": b, "n_raters": res.n, "diff": res.diff,
                          "diff_lo": res.lo, "diff_hi": res.hi, "t": res.statistic, "df": res.df, "p": res.p})
        for t, p_adj in zip(tests, stats.holm([t["p"] for t in tests]), strict=True):
            t["p_holm"] = p_adj
            t["significant"] = bool(p_adj <= ALPHA) if not np.isnan(p_adj) else False
        out += tests
    return out


def overview(folder: Path) -> dict:
    """Join code and progress of a test: {code, title, n_clips, n_systems, joined, finished, n_ratings, open}."""
    folder = Path(folder)
    manifest = catalog.read_manifest(folder)
    store = RatingStore(folder / catalog.DB)
    raters = store.raters()
    return {"code": manifest["code"], "title": manifest["title"], "n_clips": len(manifest["clips"]),
            "n_systems": len(manifest["systems"]), "joined": len(raters),
            "finished": sum(r["n_rated"] >= r["n_clips"] for r in raters), "n_ratings": store.count(),
            "open": store.is_open()}


def set_open(folder: Path, is_open: bool) -> None:
    """Open or close a test for ratings."""
    catalog.read_manifest(folder)
    RatingStore(Path(folder) / catalog.DB).set_open(is_open)


# ------------------------------------------------------------------------------------------ renderings
def _f(x: float, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _range(lo: float, hi: float) -> str:
    return "–" if lo is None or not (np.isfinite(lo) and np.isfinite(hi)) else f"{lo:.2f} – {hi:.2f}"


SUMMARY_HEADERS = ["System", "Scale", "MOS", "± t (95%)", "bootstrap 95% CI", "ratings", "raters", "clips"]
PAIRWISE_HEADERS = ["Scale", "A", "B", "A − B", "95% CI", "raters", "p", "p (Holm)", "significant"]


def summary_rows(summary: dict) -> list[list]:
    return [[r["system"], r["scale_label"], _f(r["mos"]), _f(r["t_half"]),
             _range(r["boot_lo"], r["boot_hi"]), r["n_ratings"], r["n_raters"], r["n_clips"]]
            for r in summary["rows"]]


def pairwise_rows(summary: dict) -> list[list]:
    labels = {s["id"]: s["label"] for s in summary["scales"]}
    return [[labels[t["scale"]], t["a"], t["b"], _f(t["diff"]), _range(t["diff_lo"], t["diff_hi"]),
             t["n_raters"], _f(t["p"], 4), _f(t["p_holm"], 4), "yes" if t["significant"] else "no"]
            for t in summary["pairwise"]]


def markdown(summary: dict, ci: str = "t") -> str:
    """The paper's table format: | Model | Fidelity | Musicality | with 'MOS ± half-width' cells.
    ci "t": the t-interval half-width (what the paper reports); "bootstrap": half the bootstrap CI width."""
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"ci must be 't' or 'bootstrap', got {ci!r}")
    cell = {(r["system"], r["scale"]): r for r in summary["rows"]}
    head = "| Model | " + " | ".join(s["label"] for s in summary["scales"]) + " |"
    lines = [head, "|" + "---|" * (len(summary["scales"]) + 1)]
    for system in summary["systems"]:
        cells = []
        for s in summary["scales"]:
            r = cell[system, s["id"]]
            half = r["t_half"] if ci == "t" else (r["boot_hi"] - r["boot_lo"]) / 2
            cells.append(f"{_f(r['mos'])} ± {_f(half)}")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    kind = "t-interval over ratings" if ci == "t" else "two-way bootstrap over raters and clips (half-width)"
    n = summary["raters"]
    lines.append("")
    lines.append(f"MOS ± {int(summary['level'] * 100)}% CI ({kind}); {summary['n_ratings_kept']} ratings from "
                 f"{counted(n['counted'], 'rater')} ({len(n['excluded'])} excluded by gold "
                 f"checks; {flag_note(summary)}).")
    return "\n".join(lines) + "\n" + flagged_list(summary)


def flag_note(summary: dict) -> str:
    """'2 flagged as suspicious, still counted' (or 'left out')."""
    n = summary["raters"]
    return f"{len(n['flagged'])} flagged as suspicious, {'left out' if n['exclude_flagged'] else 'still counted'}"


def flagged_list(summary: dict) -> str:
    """Markdown list of flagged raters with their reasons ('' when none)."""
    flagged = summary["raters"]["flagged"]
    if not flagged:
        return ""
    items = [f"- `{rater}`: {'; '.join(reasons)}" for rater, reasons in flagged.items()]
    return "\nFlagged raters:\n\n" + "\n".join(items) + "\n"


def _csv(headers: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows(rows)
    return buf.getvalue()


RATINGS_CSV_HEADERS = ["rater_id", "clip_id", "system", "clip_kind", "scale", "score", "created_utc",
                       "decision_s", "listen_s", "n_plays", "gold_rule", "gold_passed", "rater_excluded",
                       "rater_flags"]
SUMMARY_CSV_HEADERS = ["system", "scale", "n_ratings", "n_raters", "n_clips", "mos", "sd", "t_lo", "t_hi",
                       "t_half", "boot_lo", "boot_hi"]


def ratings_csv(folder: Path, exclude_flagged: bool = False) -> str:
    """Every raw rating with its clip's system, whether its rater is left out of the results (gold checks,
    or flags with exclude_flagged) and the rater's flags (teacher only)."""
    folder = Path(folder)
    manifest = catalog.read_manifest(folder)
    clips = {c["id"]: c for c in manifest["clips"]}
    ratings = RatingStore(folder / catalog.DB).ratings()
    flags = rater_flags(manifest, ratings)
    excluded = set(excluded_raters(manifest, gold_check(manifest, ratings))) | (set(flags) if exclude_flagged
                                                                                 else set())
    rows = []
    for r in ratings:
        clip = clips[r["clip_id"]]
        rule = clip.get("gold")
        applies = rule is not None and rule["scale"] == r["scale"]
        rule_text = "" if not applies else (f">= {rule['min']}" if "min" in rule else f"<= {rule['max']}")
        rows.append([r["rater_id"], r["clip_id"], clip["system"] or "", clip["kind"], r["scale"], r["score"],
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["created"])), round(r["decision_s"], 3),
                     round(r["listen_s"], 3), r["n_plays"], rule_text,
                     "" if not applies else int(gold_passed(rule, r["score"])), int(r["rater_id"] in excluded),
                     "; ".join(flags.get(r["rater_id"], []))])
    return _csv(RATINGS_CSV_HEADERS, rows)


def summary_csv(summary: dict) -> str:
    return _csv(SUMMARY_CSV_HEADERS, [[r[h] if not isinstance(r[h], float) else round(r[h], 6)
                                       for h in SUMMARY_CSV_HEADERS] for r in summary["rows"]])


def export(folder: Path, summary: dict, out: Path | None = None) -> tuple[Path, Path]:
    """Write ratings.csv and summary.csv to out (default: the test's exports/ folder); returns their paths."""
    out = Path(out) if out is not None else Path(folder) / catalog.EXPORTS
    out.mkdir(parents=True, exist_ok=True)
    raw, summ = out / "ratings.csv", out / "summary.csv"
    raw.write_text(ratings_csv(folder, summary["raters"]["exclude_flagged"]))
    summ.write_text(summary_csv(summary))
    return raw, summ


def export_folder(base: Path, test_id: str, max_age_s: float = EXPORT_MAX_AGE_S) -> Path:
    """A new folder base/<test_id>-<random> for one export, after deleting what base holds that is older
    than max_age_s (by modification time): exports are downloaded right away, so they need not pile up."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_s
    for old in base.iterdir():
        try:
            if old.lstat().st_mtime >= cutoff:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except OSError:  # another thread removed it first
            continue
    out = base / f"{test_id}-{secrets.token_hex(4)}"
    out.mkdir()
    return out


def figure(summary: dict, ci: str = "bootstrap"):
    """Grouped bars: MOS per system (x) and scale (colour) with error bars from the chosen interval."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in summary["scales"]:
        rows = [r for r in summary["rows"] if r["scale"] == s["id"]]
        mos = [r["mos"] if r["n_ratings"] else None for r in rows]
        lo = [r["boot_lo"] if ci == "bootstrap" else r["t_lo"] for r in rows]
        hi = [r["boot_hi"] if ci == "bootstrap" else r["t_hi"] for r in rows]
        plus = [h - m if m is not None and np.isfinite(h) else None for m, h in zip(mos, hi, strict=True)]
        minus = [m - lo_ if m is not None and np.isfinite(lo_) else None for m, lo_ in zip(mos, lo, strict=True)]
        fig.add_bar(x=[r["system"] for r in rows], y=mos, name=s["label"],
                    error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
                    hovertemplate="%{x}<br>MOS %{y:.2f}<extra>" + s["label"] + "</extra>")
    what = "two-way bootstrap" if ci == "bootstrap" else "t-interval"
    fig.update_layout(barmode="group", yaxis={"range": [0, 5.3], "title": "MOS (1-5)", "dtick": 1},
                      title=f"{summary['title']}: MOS ± {int(summary['level'] * 100)}% CI ({what})",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.15},
                      height=380)
    return fig

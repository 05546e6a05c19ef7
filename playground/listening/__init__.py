"""Classroom listening tests: blind MOS tests of SaShiMi models against real data, run from the playground.

    config.py   rating scales (the paper's MTurk protocol), TestSpec, ListenSettings (password, folders)
    catalog.py  tests on disk: folder layout, manifest.json, status.json, join codes
    builder.py  generate every clip once (background thread), write clips under opaque ids + the manifest
    store.py    SQLite (WAL) ratings: raters, play events, ratings with UNIQUE (rater, clip, scale)
    session.py  the rater flow over plain values: join, blind random order, played, rate, resume
    stats.py    t-interval, two-way bootstrap, paired/Welch t-tests, Holm (numpy only)
    results.py  MOS tables, pairwise comparisons, gold exclusions, rater flags, markdown/CSV/plotly renderings
    __main__.py CLI: create, list, summarize, open/close, serve

The UI is playground/ui_listen.py (teacher tab + the /rate page). Nothing here imports torch at import
time; builder.py imports it when it builds. See docs/listening.md.
"""
from playground.listening.config import ListeningError, ListenSettings, Scale, TestSpec

__all__ = ["ListenSettings", "ListeningError", "Scale", "TestSpec"]

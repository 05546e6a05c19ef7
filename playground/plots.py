"""Plotly figures for the playground: log-mel spectrograms and training curves (numpy + librosa only).

All spectrograms share one absolute colour scale (dB re full scale, clipped to [DB_MIN, 0]) so a prompt and
its continuations, and different results, can be compared by colour.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

DB_MIN = -90.0  # colour scale floor (dBFS); the top is 0 dBFS
N_MELS = 64
MAX_FRAMES = 1000  # spectrogram columns sent to the browser per plot
COLORSCALE = "Magma"


def log_mel(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """audio (n,) float -> (dB (N_MELS, frames) in [DB_MIN, 0], frame times (s), mel centre freqs (Hz)).

    The reference is a full-scale sine (ref = (n_fft/2)^2 of the Hann window), so loudness is absolute."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    n_fft = 1024 if sample_rate > 24000 else 512
    hop = max(n_fft // 4, int(np.ceil(len(audio) / MAX_FRAMES)))  # long clips: coarser hop, light plots
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=N_MELS,
                                         fmax=sample_rate / 2, power=2.0, center=True)
    ref = (np.hanning(n_fft).sum() / 2) ** 2
    db = np.clip(librosa.power_to_db(mel, ref=ref, amin=1e-12, top_db=None), DB_MIN, 0.0)
    times = librosa.frames_to_time(np.arange(db.shape[1]), sr=sample_rate, hop_length=hop)
    freqs = librosa.mel_frequencies(n_mels=N_MELS, fmax=sample_rate / 2)
    return db, times, freqs


def spectrogram_figure(audio: np.ndarray, sample_rate: int, boundary_s: float | None = None,
                       title: str = "", height: int = 300) -> go.Figure:
    """Log-mel spectrogram; a dashed line and labels mark the prompt/continuation boundary when given."""
    db, times, freqs = log_mel(audio, sample_rate)
    fig = go.Figure(go.Heatmap(
        z=np.round(db, 1), x=np.round(times, 4), y=np.arange(N_MELS), zmin=DB_MIN, zmax=0.0,
        colorscale=COLORSCALE,
        colorbar={"title": {"text": "dBFS"}, "thickness": 10, "len": 1.0, "tickvals": [0, -30, -60, -90]},
        hovertemplate="t=%{x:.3f} s<br>mel bin %{y}<br>%{z:.1f} dBFS<extra></extra>"))
    ticks = [i for i in range(0, N_MELS, 16)] + [N_MELS - 1]
    fig.update_yaxes(title_text="mel freq (Hz)", tickvals=ticks, ticktext=[f"{freqs[i]:.0f}" for i in ticks])
    fig.update_xaxes(title_text="time (s)", range=[0, max(len(audio) / sample_rate, 1e-3)])
    if boundary_s is not None and boundary_s > 0:
        fig.add_vline(x=boundary_s, line={"color": "#22d3ee", "width": 2, "dash": "dash"})
        fig.add_annotation(x=boundary_s, y=1.0, yref="paper", text="prompt | continuation",
                           showarrow=False, yanchor="bottom", font={"size": 11, "color": "#0e7490"})
    fig.update_layout(title={"text": title, "font": {"size": 13}} if title else None, height=height,
                      margin={"l": 60, "r": 10, "t": 24 if title or boundary_s else 8, "b": 40},
                      template="plotly_white")
    return fig


def training_figure(train: list[dict], val: list[dict], height: int = 300) -> go.Figure:
    """Training loss and validation NLL (bits per sample) against step."""
    fig = go.Figure()
    if train:
        fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r.get("loss_bits") for r in train],
                                 mode="lines", name="train loss", line={"color": "#2563eb"}))
    if val:
        fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[r.get("val_nll_bits") for r in val],
                                 mode="lines+markers", name="validation NLL", line={"color": "#dc2626"}))
    empty = not train and not val
    if empty:
        fig.add_annotation(text="no metrics yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(title_text="step", visible=not empty)
    fig.update_yaxes(title_text="bits per sample", visible=not empty)
    fig.update_layout(height=height, margin={"l": 60, "r": 10, "t": 10, "b": 40}, template="plotly_white",
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    return fig

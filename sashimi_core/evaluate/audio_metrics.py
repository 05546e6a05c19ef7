"""Automatic metrics for unconditional spoken-digit generation (SC09): FID, IS, mIS, AM, recogniser share.

SaShiMi (Goel et al. 2022, §5.2, App. C.2) scores SC09 samples as DiffWave (Kong et al. 2021, §5.2 and
App. D) does, with a digit classifier (here :mod:`sashimi_core.evaluate.classifier`):

- FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the classifier's penultimate
  features of generated and real clips, ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_r^1/2 S_g S_r^1/2)^1/2)``.
  Lower is better; 0 for identical sets. Finite-sample bias makes it grow as N shrinks (two disjoint real
  sets: 0.63 at N ~ 2300, 0.91 at 500, 2.2 at 200 with the shipped classifier), so compare at equal N.
- IS (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))``, p(y) the mean prediction over the generated
  set. Higher is better; at most the number of classes (10).
- mIS (Gurumurthy et al. 2017): ``exp(E_{x,x'} KL(p(y|x) || p(y|x')))`` over independent pairs of generated
  clips; rewards confident and diverse (within-class too) samples. Higher is better.
- AM (Zhou et al. 2018): ``KL(p*(y) || p(y)) + E_x H(p(y|x))``, p*(y) the class distribution of real data
  (Zhou et al. and the SaShiMi evaluation script take it as the classifier's mean prediction on real clips;
  ``evaluate_audio`` does the same). Lower is better; 0 is perfect.
- Recogniser share: the fraction of clips that an off-the-shelf recogniser (CMU pocketsphinx, its en-us
  acoustic model shipped in the PyPI wheel, restricted by a JSGF grammar to the ten digit words) decodes as a
  digit, next to the same share (and its accuracy) on real clips. The grammar forces a digit onto any speech
  that reaches the grammar's final state, so the share rejects noise, silence and many non-words, not all
  non-digit speech.

Entropies use natural logs. Scores from this classifier are comparable with each other only, never with the
papers' SC09 numbers (different classifier, different data).

CLI: ``python -m sashimi_core.evaluate.audio_metrics --generated DIR --real data/sc09-synth [--split test --n 500]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_EPS = np.finfo(np.float64).tiny  # floor inside logs, only for probabilities that underflowed to exactly 0


# --------------------------------------------------------------------------------------------- FID
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D) -> mean (D,) and unbiased covariance (D, D), float64. Needs N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh; eigenvalues below 0 (round-off) are clipped to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2) (D,), (D, D):

        |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2)

    The cross term is the trace of sqrtm(S1 S2) (same eigenvalues), computed from the symmetric PSD matrix
    S1^1/2 S2 S1^1/2 with eigh in float64, so singular covariances (N < D) need no diagonal offset and the
    result has no imaginary part to discard."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return max(value, 0.0)  # round-off can leave a tiny negative number for identical Gaussians


def fid(features_gen: np.ndarray, features_real: np.ndarray) -> float:
    """FID of generated vs real features, (N_g, D) and (N_r, D) -> float (lower is better)."""
    return frechet_distance(*gaussian_stats(features_gen), *gaussian_stats(features_real))


# ----------------------------------------------------------------------------------- IS, mIS, AM
def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probabilities must be (N >= 1, K), got shape {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must be non-negative and sum to 1 (use softmax outputs)")
    return p


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    """(N, K) -> (N,) Shannon entropy in nats, with 0 log 0 = 0."""
    return -np.sum(p * np.log(np.clip(p, _EPS, None)), axis=1)


def inception_score(probs: np.ndarray) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))), p(y) = mean_x p(y|x); probs (N, K) -> float in [1, K].

    Computed as exp(H(p(y)) - E_x H(p(y|x))), which equals the mean KL exactly. (The SaShiMi script shuffles
    and splits the set, taking p(y) from the other half; this is the standard whole-set definition.)"""
    p = _check_probs(probs)
    return float(np.exp(_entropy_rows(p.mean(axis=0, keepdims=True))[0] - _entropy_rows(p).mean()))


def modified_inception_score(probs: np.ndarray) -> float:
    """mIS = exp(E_{x,x'} KL(p(y|x) || p(y|x'))) over all N^2 ordered pairs (x = x' included, as when pairs
    are drawn with replacement; the SaShiMi script samples 10k such pairs, this is their exact expectation).

    E_{x,x'} KL = -E_x H(p(y|x)) - sum_y pbar(y) E_x' log p(y|x'), so it costs O(N K), not O(N^2 K).
    probs (N, K) -> float >= 1."""
    p = _check_probs(probs)
    logp = np.log(np.clip(p, _EPS, None))
    mean_kl = -_entropy_rows(p).mean() - float(p.mean(axis=0) @ logp.mean(axis=0))
    return float(np.exp(mean_kl))


def am_score(probs: np.ndarray, reference: np.ndarray) -> float:
    """AM = KL(p*(y) || p(y)) + E_x H(p(y|x)); probs (N, K) of generated clips, reference p*(y) (K,) (or
    (M, K) real-clip probabilities, averaged) -> float >= 0 (lower is better). Zhou et al. 2018, eq. 9."""
    p = _check_probs(probs)
    ref = np.asarray(reference, dtype=np.float64)
    ref = _check_probs(ref[None] if ref.ndim == 1 else ref).mean(axis=0)
    if ref.shape[0] != p.shape[1]:
        raise ValueError(f"reference has {ref.shape[0]} classes, probabilities have {p.shape[1]}")
    marginal = p.mean(axis=0)
    kl = float(np.sum(ref * (np.log(np.clip(ref, _EPS, None)) - np.log(np.clip(marginal, _EPS, None)))))
    return kl + float(_entropy_rows(p).mean())


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_audio(generated: np.ndarray, real: np.ndarray, classifier=None, real_labels=None,
                   recogniser: bool = False, batch_size: int = 256) -> dict:
    """All metrics of generated clips against real ones.

    Args:
        generated: (N_g, T) float in [-1, 1], 16 kHz (T = 16000; others are centre-cropped/padded).
        real: (N_r, T) real clips (e.g. the test split), the FID reference and the source of p*(y).
        classifier: a :class:`~sashimi_core.evaluate.classifier.DigitClassifier` (default: the shipped one).
        real_labels: optional (N_r,) int labels of the real clips, for the classifier's (and recogniser's)
            accuracy on them.
        recogniser: also run pocketsphinx (slow, ~0.1 s a clip) for the recogniser share.
    Returns: {"fid", "is", "mis", "am", "n_generated", "n_real", "generated_class_histogram",
        "reference": {"is", "mis", "am", ["accuracy"]}, ["recogniser": {"generated": {...}, "real": {...}}]};
        ``reference`` holds the upper references (the real set scored against itself: its AM is its mean
        entropy, its FID would be 0).
    """
    from sashimi_core.evaluate.classifier import load_classifier

    generated, real = np.asarray(generated, np.float32), np.asarray(real, np.float32)
    if generated.ndim != 2 or real.ndim != 2 or len(generated) < 2 or len(real) < 2:
        raise ValueError(f"generated and real must be (N >= 2, T) arrays, got {generated.shape}, {real.shape}")
    clf = classifier if classifier is not None else load_classifier()
    f_gen, p_gen = clf.embed(generated, batch_size)
    f_real, p_real = clf.embed(real, batch_size)
    k = p_gen.shape[1]
    out = {"fid": fid(f_gen, f_real), "is": inception_score(p_gen), "mis": modified_inception_score(p_gen),
           "am": am_score(p_gen, p_real), "n_generated": len(generated), "n_real": len(real),
           "generated_class_histogram": np.bincount(p_gen.argmax(1), minlength=k).tolist(),
           "reference": {"is": inception_score(p_real), "mis": modified_inception_score(p_real),
                         "am": am_score(p_real, p_real)}}
    if real_labels is not None:
        out["reference"]["accuracy"] = float((p_real.argmax(1) == np.asarray(real_labels)).mean())
    if recogniser:
        out["recogniser"] = {"generated": recogniser_share(generated),
                             "real": recogniser_share(real, real_labels)}
    return out


# ------------------------------------------------------------------------------------- speech recogniser
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_GRAMMAR = "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(DIGIT_WORDS) + ";\n"


def recogniser_available() -> bool:
    """Whether pocketsphinx (``pip install pocketsphinx``) can be imported."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def _digit_decoder():
    try:
        from pocketsphinx import Config, Decoder
    except ImportError as exc:
        raise RuntimeError("the recogniser share needs pocketsphinx: `pip install pocketsphinx` (its wheel "
                           "ships the en-us acoustic model and runs offline)") from exc
    decoder = Decoder(Config(loglevel="FATAL", lm=None))  # default en-us model from the wheel, no n-gram LM
    decoder.add_jsgf_string("digits", _GRAMMAR)
    decoder.activate_search("digits")
    return decoder


def recognise_digits(audio, noise_floor: float = 3e-3) -> list[str | None]:
    """pocketsphinx with a ten-digit JSGF grammar: audio (N, T) (or (T,)) float in [-1, 1] at 16 kHz ->
    the decoded digit word per clip, or None where decoding reaches no digit (silence, noise, non-speech).

    Each clip is decoded as one utterance. White noise of RMS ``noise_floor`` (default -50 dBFS, the same
    seeded noise for every clip) is added first: the en-us acoustic model was trained on recordings and
    mistakes digital silence next to speech for the silence model (espeak-ng's "seven" then decodes as "one");
    sc09-synth's recipe-1 clips carried a floor at that level and scored the same with or without it.
    ~0.02-0.1 s a clip on one CPU core."""
    x = np.asarray(audio, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise ValueError(f"audio must be (N, T) or (T,), got shape {x.shape}")
    decoder, out = _digit_decoder(), []
    for clip in x:
        floor = noise_floor * np.random.default_rng(0).standard_normal(clip.shape[0]).astype(np.float32)
        pcm = (np.clip(clip + floor, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()  # 16-bit PCM
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        word = hyp.hypstr.strip() if hyp is not None else ""
        out.append(word if word in DIGIT_WORDS else None)
    return out


def recogniser_share(audio, labels=None) -> dict:
    """Share of clips (N, T) the digit recogniser decodes as a digit -> {"share", "n", "histogram" (10 counts)}
    plus, with labels (N,) int (digit index), "accuracy" (correct / all clips) and "accuracy_recognised"."""
    words = recognise_digits(audio)
    got = np.array([w is not None for w in words])
    out = {"share": float(got.mean()) if len(words) else float("nan"), "n": len(words),
           "histogram": [sum(w == d for w in words) for d in DIGIT_WORDS]}
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(words):
            raise ValueError(f"{len(labels)} labels for {len(words)} clips")
        right = np.array([0 <= y < 10 and w == DIGIT_WORDS[y] for w, y in zip(words, labels.tolist(), strict=True)])
        out["accuracy"] = float(right.mean()) if len(words) else float("nan")
        out["accuracy_recognised"] = float(right[got].mean()) if got.any() else float("nan")
    log.info("recogniser: %d/%d clips decoded as a digit", int(got.sum()), len(words))
    return out


# ------------------------------------------------------------------------------------------- loading
def load_clips(files, length: int = 16000) -> np.ndarray:
    """Audio files -> (N, length) float32 at 16 kHz mono (resampled; cut or zero-padded at the end)."""
    from sashimi_core.data.common import load_audio

    out = np.zeros((len(files), length), np.float32)
    for i, f in enumerate(files):
        y = load_audio(f, 16000)[:length]
        out[i, :len(y)] = y
    return out


def real_clips(root, split: str = "test", n: int | None = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of n clips (all if None) of a data set's split (any layout ``sashimi_core.data``
    reads) -> audio (n, 16000) float32, labels (n,) int64 from the digit folder names (-1 if not a digit)."""
    from sashimi_core.data.loaders import split_files
    from sashimi_core.evaluate.classifier import DIGITS

    files = split_files(root, split)
    if not files:
        raise ValueError(f"no {split} clips found under {root}")
    if n is not None and n < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False))
        files = [files[i] for i in keep]
    labels = np.array([DIGITS.index(f.parent.name) if f.parent.name in DIGITS else -1 for f in files])
    return load_clips(files), labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sashimi_core.evaluate.audio_metrics",
                                     description="FID / IS / mIS / AM (+ pocketsphinx share) of generated digits.")
    parser.add_argument("--generated", help="folder of generated clips (any audio files, searched recursively); "
                        "omit to score a second real split (--generated-split) as the upper reference")
    parser.add_argument("--generated-split", default="valid", help="real split scored when --generated is omitted")
    parser.add_argument("--real", default="data/sc09-synth", help="real data set folder")
    parser.add_argument("--split", default="test", help="real split used as the reference")
    parser.add_argument("--n", type=int, default=500, help="clips per set (random seeded subset); 0 = all")
    parser.add_argument("--classifier", default=None, help="classifier folder (default: the shipped one)")
    parser.add_argument("--recogniser", action="store_true", help="also compute the pocketsphinx share")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from sashimi_core.data.loaders import list_audio
    from sashimi_core.evaluate.classifier import load_classifier

    torch.set_num_threads(1)
    n = args.n or None
    real, labels = real_clips(args.real, args.split, n, args.seed)
    if args.generated:
        files = list_audio(args.generated)
        if not files:
            print(f"no audio files under {args.generated}", file=sys.stderr)
            return 2
        if n is not None and n < len(files):
            files = [files[i] for i in np.sort(np.random.default_rng(args.seed).choice(len(files), n, False))]
        generated, gen_labels = load_clips(files), None
    else:
        generated, gen_labels = real_clips(args.real, args.generated_split, n, args.seed + 1)
    clf = load_classifier(args.classifier) if args.classifier else load_classifier()
    result = evaluate_audio(generated, real, clf, real_labels=labels if (labels >= 0).all() else None,
                            recogniser=args.recogniser)
    result.update(generated=args.generated or f"{args.real}:{args.generated_split}", real=f"{args.real}:{args.split}")
    if gen_labels is not None:
        _, p = clf.embed(generated)
        result["generated_accuracy"] = float((p.argmax(1) == gen_labels).mean())
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

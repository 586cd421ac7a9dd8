"""Benchmark: the drift signals of refinery.monitoring.signals against today's descriptor check, on real text.

What it measures
    How well each signal of :mod:`refinery.monitoring.signals` tells a window of served predictions that
    moved to another domain from one that did not, and what the whole check costs on 100k rows.

    The model is all-MiniLM-L6-v2 fine-tuned on part of SST-2 train with refinery's own
    :func:`refinery.training.finetune.finetune` (configs/demo.yaml with max_length 64, 2 epochs, no
    refit, no tracking), cached under the system temp folder (``--cache``). The rest of SST-2 train,
    which the model never trained on, is the held-out reference: its embeddings and probabilities make
    the :class:`~refinery.monitoring.signals.ReferenceStats` (a model's embeddings and confidence on its
    own training texts differ from those on unseen texts, and would make every window look drifted).
    The descriptor reference is what ``prepare_data`` stores: descriptors of the training texts with
    their labels.

    Windows of 400 predictions: clean ones drawn from SST-2 dev, and mixed ones where 10, 20, 30 or 50%
    of the rows are CR product reviews (another domain, same sentiment labels), the rest SST-2 dev;
    ``--windows`` of each (default 20), seeded. Every text is encoded once; windows are assembled from
    the stored outputs.

    On each window, under the default configuration (``MonitoringConfig()``): the descriptor signal
    (:func:`refinery.monitoring.drift.detect_drift`, the baseline: today's check), the embedding, the
    confidence and the estimated-accuracy signals, and the feedback-accuracy signal with every
    prediction labelled (a best case: served windows rarely get that much feedback). The policy fires
    when any signal whose ``fire`` is on fires; it is computed without feedback labels. For comparison,
    Evidently's own embedding drift method (``ModelDriftMethod``, called directly) runs on each window
    too, with its default threshold. The windows run with one BLAS thread (threadpoolctl): the verdicts
    do not depend on it, and two threads per small fit oversubscribe two shared cores.

    The timing: the whole check (descriptors of the window's texts, ``detect_drift``, every signal) on
    a window of 100k rows against a reference of 100k rows (texts, embeddings and probabilities
    resampled with replacement; the window 20% CR), with the reference statistics precomputed (they are
    stored with the model version: descriptors of the training texts, ``fit_reference`` of the held-out
    rows); model inference is not in it. The baseline: descriptors and ``detect_drift`` alone. One call
    of Evidently's ``EmbeddingsDrift`` report on one 400-row window is timed as well.

Targets (issue): no false alarm of the policy in the clean windows; at least 80% of the 20%-mix
windows detected; estimated accuracy within 3 points of the true accuracy (mean absolute error) on
every mix; the check on 100k vs 100k rows under 60 s.

Run:  python bench/drift.py [--windows N] [--seed S] [--rows N] [--cache DIR]
Exit: 0 when every target holds, 1 when one is missed, 2 when the data or the base model is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from refinery.config import MonitoringConfig
    from refinery.monitoring.signals import ReferenceStats, SignalResult

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DATA = REPO.parent / "shared" / "data"
SST2_TRAIN = DATA / "sst2" / "train.csv"
SST2_DEV = DATA / "sst2" / "dev.csv"
CR = DATA / "customer_reviews" / "reviews.csv"
MODEL = REPO / "models" / "all-MiniLM-L6-v2"
CACHE = Path(tempfile.gettempdir()) / "refinery-bench-drift"
LABELS = ("0", "1")  # SST-2's and CR's labels: 1 positive, 0 negative

WINDOW = 400
MIXES = (0.1, 0.2, 0.3, 0.5)
SIGNALS = ("descriptors", "embedding", "confidence", "estimated_accuracy", "feedback_accuracy")
EVIDENTLY_ROW = "evidently ModelDriftMethod"
TARGET_FALSE_ALARMS = 0
TARGET_MIX, TARGET_DETECTION = 0.2, 0.8
TARGET_ERROR_POINTS = 3.0
TARGET_SECONDS = 60.0


@dataclass(frozen=True)
class TrainSettings:
    """How the monitored model is fine-tuned; the cache key of the model and of its encodings."""

    train_rows: int = 3000
    validation_rows: int = 400
    epochs: float = 2
    max_length: int = 64
    learning_rate: float = 1e-4
    batch_size: int = 32
    seed: int = 42

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def read_csv(path: Path) -> pd.DataFrame:
    """A ``text,label`` CSV of ../shared/data as text (str) and label (str "0"/"1")."""
    frame = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
    return frame.assign(label=frame["label"].astype(int).astype(str))


def split_train(settings: TrainSettings) -> dict[str, pd.DataFrame]:
    """SST-2 train split, seeded and stratified: the model's train and validation rows, and the held-out
    rest whose embeddings and probabilities are the reference statistics."""
    from sklearn.model_selection import train_test_split

    frame = read_csv(SST2_TRAIN)
    used, held_out = train_test_split(
        frame,
        train_size=settings.train_rows + settings.validation_rows,
        random_state=settings.seed,
        stratify=frame["label"],
    )
    train, validation = train_test_split(
        used, test_size=settings.validation_rows, random_state=settings.seed, stratify=used["label"]
    )
    return {
        "train": train.reset_index(drop=True),
        "validation": validation.reset_index(drop=True),
        "held_out": held_out.reset_index(drop=True),
    }


def trained_model(settings: TrainSettings, parts: dict[str, pd.DataFrame], cache: Path) -> Path:
    """Fine-tune the base model with refinery's own finetune (cached under ``cache``)."""
    model_dir = cache / f"model-{settings.key()}"
    if (model_dir / "model.safetensors").is_file():
        print(f"model: cached at {model_dir}", flush=True)
        return model_dir
    from refinery.config import load_config
    from refinery.training.finetune import finetune

    work = Path(tempfile.mkdtemp(prefix="train-", dir=cache))
    data_dir = work / "prepared"
    data_dir.mkdir()
    for split in ("train", "validation"):
        parts[split].to_parquet(data_dir / f"{split}.parquet", index=False)
    overrides = [
        f"state_dir={work / 'state'}",
        f"data.uri={SST2_TRAIN}",
        f"data.labels=[{', '.join(repr(x) for x in LABELS)}]",
        f"model.base={MODEL}",
        f"model.max_length={settings.max_length}",
        f"training.epochs={settings.epochs}",
        f"training.learning_rate={settings.learning_rate}",
        f"training.batch_size={settings.batch_size}",
        f"training.seed={settings.seed}",
        "training.refit=false",
        "training.tracking=false",
    ]
    cfg = load_config(DEMO_CONFIG, overrides, base=REPO)
    started = time.perf_counter()
    result = finetune(cfg, data_dir, work / "model")
    print(
        f"model: fine-tuned on {result.train_samples} rows, {result.epochs_run:g} epochs in"
        f" {time.perf_counter() - started:.0f} s, validation accuracy {result.validation_accuracy:.4f}",
        flush=True,
    )
    os.replace(work / "model", model_dir)
    shutil.rmtree(work, ignore_errors=True)
    return model_dir


@dataclass(frozen=True)
class Encoded:
    """The model's outputs on a set of texts, row-aligned with its frame."""

    frame: pd.DataFrame  # text, label
    probabilities: np.ndarray  # float32 [n, 2]
    embeddings: np.ndarray  # float32 [n, hidden]

    @property
    def true_idx(self) -> np.ndarray:
        return self.frame["label"].astype(int).to_numpy()

    @property
    def predicted(self) -> np.ndarray:
        return np.array(LABELS)[self.probabilities.argmax(axis=1)]


def encoded(name: str, frame: pd.DataFrame, model_dir: Path, settings: TrainSettings) -> Encoded:
    """Probabilities and embeddings of every text of ``frame``, computed once and cached next to the model."""
    path = model_dir.parent / f"encoded-{settings.key()}-{name}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            if len(cached["probabilities"]) == len(frame):
                return Encoded(frame, cached["probabilities"], cached["embeddings"])
    from transformers.utils import logging as hf_logging

    from refinery.atomic import staged_file
    from refinery.modeling import load_classifier

    hf_logging.disable_progress_bar()

    classifier = load_classifier(model_dir, max_length=settings.max_length, device="cpu")
    started = time.perf_counter()
    probabilities, embeddings = classifier.encode(frame["text"].tolist(), batch_size=128)
    print(f"encoded {len(frame)} {name} texts in {time.perf_counter() - started:.0f} s", flush=True)
    with staged_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, probabilities=probabilities, embeddings=embeddings)
    return Encoded(frame, probabilities, embeddings)


# --------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Per scenario (0.0 = clean, else the CR share) and per row of the table: windows fired."""

    fired: dict[tuple[float, str], int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[float, list[tuple[float, float]]] = field(default_factory=dict)  # (estimated, true)
    auc: dict[tuple[float, str], list[float]] = field(default_factory=dict)  # domain classifiers' AUCs

    def add(self, scenario: float, row: str, fired: bool) -> None:
        self.fired[scenario, row] = self.fired.get((scenario, row), 0) + int(fired)

    def time(self, row: str, seconds: float) -> None:
        self.seconds[row] = self.seconds.get(row, 0.0) + seconds


def timed(tally: Tally, row: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, its wall time added to ``row``'s."""
    started = time.perf_counter()
    out = call(*args)
    tally.time(row, time.perf_counter() - started)
    return out


def descriptor_check(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig, out: Path
) -> SignalResult:
    """Today's check as a signal: Evidently on the descriptors (the window's already computed)."""
    from refinery.monitoring.drift import detect_drift
    from refinery.monitoring.signals import descriptor_signal

    return descriptor_signal(detect_drift(reference, current, cfg, out), cfg.signals.descriptors)


def window_rows(rng: np.random.Generator, mix: float, dev: int, cr: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into dev and CR for one window of WINDOW rows, ``mix`` of them CR (no repeats)."""
    k = round(WINDOW * mix)
    return rng.choice(dev, WINDOW - k, replace=False), rng.choice(cr, k, replace=False)


def evidently_model_auc(reference: np.ndarray, window: np.ndarray) -> tuple[float, bool]:
    """Evidently's embedding domain classifier (its default: one 50/50 split, SGD, threshold 0.55)."""
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    score, drifted, _ = model()(pd.DataFrame(window), pd.DataFrame(reference))
    return float(score), bool(drifted)


def run_windows(
    cfg: MonitoringConfig,
    reference: ReferenceStats,
    reference_descriptors: pd.DataFrame,
    dev: Encoded,
    cr: Encoded,
    windows: int,
    seed: int,
) -> Tally:
    """Every signal on ``windows`` clean windows and as many of each mix."""
    from refinery.monitoring import signals
    from refinery.monitoring.descriptors import text_descriptors

    sig = cfg.signals
    dev_desc = text_descriptors(dev.frame["text"].tolist())
    cr_desc = text_descriptors(cr.frame["text"].tolist())
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="refinery-bench-drift-") as tmp:
        for scenario in (0.0, *MIXES):
            rng = np.random.default_rng([seed, round(scenario * 100)])
            for w in range(windows):
                di, ci = window_rows(rng, scenario, len(dev.frame), len(cr.frame))
                emb = np.concatenate([dev.embeddings[di], cr.embeddings[ci]])
                probs = np.concatenate([dev.probabilities[di], cr.probabilities[ci]])
                predicted = np.concatenate([dev.predicted[di], cr.predicted[ci]])
                true = np.concatenate([dev.frame["label"].to_numpy()[di], cr.frame["label"].to_numpy()[ci]])
                current = pd.concat([dev_desc.iloc[di], cr_desc.iloc[ci]], ignore_index=True)
                current["label"] = predicted
                out = Path(tmp) / f"{scenario}-{w}"
                results: dict[str, SignalResult] = {
                    "descriptors": timed(
                        tally, "descriptors", descriptor_check, reference_descriptors, current, cfg, out
                    ),
                    "embedding": timed(
                        tally, "embedding", signals.embedding_signal, reference, emb, sig.embedding, w
                    ),
                    "confidence": timed(
                        tally, "confidence", signals.confidence_signal, reference, probs, sig.confidence
                    ),
                    "estimated_accuracy": timed(
                        tally,
                        "estimated_accuracy",
                        signals.estimated_accuracy_signal,
                        reference,
                        probs,
                        sig.estimated_accuracy,
                    ),
                    "feedback_accuracy": timed(
                        tally,
                        "feedback_accuracy",
                        signals.feedback_accuracy_signal,
                        reference,
                        list(predicted),
                        list(true),
                        sig.feedback_accuracy,
                    ),
                }
                shutil.rmtree(out, ignore_errors=True)
                for name, result in results.items():
                    tally.add(scenario, name, result.fired)
                # The policy as the monitor sees a served window: no feedback labels.
                firing = [n for n, r in results.items() if r.fired and n != "feedback_accuracy"]
                tally.add(scenario, "policy", any(getattr(sig, n).fire for n in firing))
                evidently_auc, evidently_fired = timed(
                    tally, EVIDENTLY_ROW, evidently_model_auc, reference.embeddings, emb
                )
                tally.add(scenario, EVIDENTLY_ROW, evidently_fired)
                embedding_auc = results["embedding"].value
                assert embedding_auc is not None
                tally.auc.setdefault((scenario, "embedding"), []).append(embedding_auc)
                tally.auc.setdefault((scenario, EVIDENTLY_ROW), []).append(evidently_auc)
                estimate = results["estimated_accuracy"].value
                assert estimate is not None
                tally.accuracy.setdefault(scenario, []).append((estimate, float(np.mean(predicted == true))))
            print(f"  {windows} windows at {scenario:.0%} CR done", flush=True)
    return tally


# --------------------------------------------------------------------------------------------------
# The check on 100k rows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    rows: int
    precompute_s: float  # descriptors of the reference texts + fit_reference: stored with the model
    baseline_s: float  # window descriptors + detect_drift
    full_s: float  # the baseline's work + every signal
    evidently_report_s: float  # one Evidently EmbeddingsDrift report on a 400-row window


def time_check(
    cfg: MonitoringConfig,
    held_out: Encoded,
    train: pd.DataFrame,
    dev: Encoded,
    cr: Encoded,
    rows: int,
    seed: int,
) -> Timing:
    """The full check and the descriptor check alone on ``rows`` vs ``rows``, reference precomputed."""
    from refinery.monitoring import signals
    from refinery.monitoring.descriptors import text_descriptors

    sig = cfg.signals
    rng = np.random.default_rng([seed, 100_000])
    started = time.perf_counter()
    ref_rows = rng.integers(0, len(train), rows)
    reference_descriptors = text_descriptors(train["text"].to_numpy()[ref_rows].tolist())
    reference_descriptors["label"] = train["label"].to_numpy()[ref_rows]
    held = rng.integers(0, len(held_out.frame), rows)
    reference = signals.fit_reference(
        held_out.embeddings[held],
        held_out.probabilities[held],
        held_out.true_idx[held],
        max_rows=sig.embedding.max_rows,
        seed=seed,
    )
    precompute = time.perf_counter() - started

    k = round(rows * TARGET_MIX)
    di, ci = rng.integers(0, len(dev.frame), rows - k), rng.integers(0, len(cr.frame), k)
    texts = [*dev.frame["text"].to_numpy()[di], *cr.frame["text"].to_numpy()[ci]]
    emb = np.concatenate([dev.embeddings[di], cr.embeddings[ci]])
    probs = np.concatenate([dev.probabilities[di], cr.probabilities[ci]])
    predicted = np.concatenate([dev.predicted[di], cr.predicted[ci]])
    true = [*dev.frame["label"].to_numpy()[di], *cr.frame["label"].to_numpy()[ci]]

    def described(out: Path) -> SignalResult:
        current = text_descriptors(texts)
        current["label"] = predicted
        return descriptor_check(reference_descriptors, current, cfg, out)

    with tempfile.TemporaryDirectory(prefix="refinery-bench-drift-") as tmp:
        started = time.perf_counter()
        described(Path(tmp) / "baseline")
        baseline = time.perf_counter() - started

        started = time.perf_counter()
        results = [
            described(Path(tmp) / "full"),
            signals.embedding_signal(reference, emb, sig.embedding, seed=seed),
            signals.confidence_signal(reference, probs, sig.confidence),
            signals.estimated_accuracy_signal(reference, probs, sig.estimated_accuracy),
            signals.feedback_accuracy_signal(reference, list(predicted), true, sig.feedback_accuracy),
        ]
        full = time.perf_counter() - started
    for result in results:
        print(f"  100k {result.name}: {result.detail}")
    return Timing(rows, precompute, baseline, full, time_evidently_report(reference, dev.embeddings[:WINDOW]))


def time_evidently_report(reference: ReferenceStats, window: np.ndarray) -> float:
    """One Evidently ``EmbeddingsDrift`` report (model method) on one window, as the library offers it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    columns = [f"e{i}" for i in range(reference.embeddings.shape[1])]
    definition = DataDefinition(numerical_columns=columns, embeddings={"embedding": columns})
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Report([EmbeddingsDrift(embeddings_name="embedding", drift_method=ModelDriftMethod())]).run(
            reference_data=Dataset.from_pandas(
                pd.DataFrame(reference.embeddings, columns=columns), data_definition=definition
            ),
            current_data=Dataset.from_pandas(
                pd.DataFrame(window, columns=columns), data_definition=definition
            ),
        )
    return time.perf_counter() - started


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def print_tables(cfg: MonitoringConfig, tally: Tally, windows: int) -> None:
    rows = [*SIGNALS, "policy", EVIDENTLY_ROW]
    mixes = " | ".join(f"{m:.0%} CR" for m in MIXES)
    print(f"\n| signal | fire | false alarms (clean) | detected: {mixes} | s/window |")
    print("|---|---|---|" + "---|" * len(MIXES) + "---|")
    for row in rows:
        fire = "yes" if row != EVIDENTLY_ROW and row != "policy" and getattr(cfg.signals, row).fire else "no"
        if row == "policy":
            fire = "-"
        note = " (every prediction labelled)" if row == "feedback_accuracy" else ""
        note = " (baseline)" if row == "descriptors" else note
        clean = tally.fired.get((0.0, row), 0)
        detected = " | ".join(f"{tally.fired.get((m, row), 0) / windows:.0%}" for m in MIXES)
        seconds = tally.seconds.get(row)
        per_window = f"{seconds / (windows * (1 + len(MIXES))):.2f}" if seconds is not None else "-"
        print(f"| {row}{note} | {fire} | {clean}/{windows} | {detected} | {per_window} |")
    max_auc = cfg.signals.embedding.max_auc
    print(
        f"\n| mix | embedding AUC: mean | sd | min | max (fires above {max_auc:g}) |"
        " evidently ModelDriftMethod AUC: mean | max |"
    )
    print("|---|---|---|---|---|---|---|")
    for scenario in (0.0, *MIXES):
        ours, theirs = (
            np.array(tally.auc[scenario, "embedding"]),
            np.array(tally.auc[scenario, EVIDENTLY_ROW]),
        )
        print(
            f"| {scenario:.0%} CR | {ours.mean():.3f} | {ours.std():.3f} | {ours.min():.3f} | {ours.max():.3f} |"
            f" {theirs.mean():.3f} | {theirs.max():.3f} |"
        )
    print(
        "\n| mix | true accuracy (mean) | estimated (mean) | mean abs error, points | max abs error, points |"
    )
    print("|---|---|---|---|---|")
    for scenario in (0.0, *MIXES):
        pairs = np.array(tally.accuracy[scenario])
        error = np.abs(pairs[:, 0] - pairs[:, 1]) * 100
        print(
            f"| {scenario:.0%} CR | {pairs[:, 1].mean():.4f} | {pairs[:, 0].mean():.4f} |"
            f" {error.mean():.2f} | {error.max():.2f} |"
        )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else ("n/a" if a == 0 else "inf (baseline 0)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=20, help="windows per scenario (clean and each mix)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the windows and the reference sample")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per side of the timed check")
    parser.add_argument(
        "--cache", type=Path, default=CACHE, help="where the trained model and encodings are kept"
    )
    args = parser.parse_args(argv)

    missing = [str(p) for p in (SST2_TRAIN, SST2_DEV, CR) if not p.is_file()]
    if missing:
        print(
            f"skipped: data not found: {', '.join(missing)} (see ../shared/data/README.md)", file=sys.stderr
        )
        return 2
    if not (MODEL / "config.json").is_file():
        print(f"skipped: base model not found at {MODEL} (run `make base-model`)", file=sys.stderr)
        return 2

    from threadpoolctl import threadpool_limits

    from refinery.config import MonitoringConfig
    from refinery.monitoring import signals
    from refinery.monitoring.descriptors import text_descriptors

    cfg = MonitoringConfig()
    settings = TrainSettings()
    args.cache.mkdir(parents=True, exist_ok=True)
    parts = split_train(settings)
    model_dir = trained_model(settings, parts, args.cache)
    held_out = encoded("held_out", parts["held_out"], model_dir, settings)
    dev = encoded("dev", read_csv(SST2_DEV), model_dir, settings)
    cr = encoded("cr", read_csv(CR), model_dir, settings)

    reference = signals.fit_reference(
        held_out.embeddings,
        held_out.probabilities,
        held_out.true_idx,
        max_rows=cfg.signals.embedding.max_rows,
        seed=args.seed,
    )
    reference_descriptors = text_descriptors(parts["train"]["text"].tolist())
    reference_descriptors["label"] = parts["train"]["label"].to_numpy()
    accuracy = {
        name: float(np.mean(e.predicted == e.frame["label"].to_numpy()))
        for name, e in (("held-out", held_out), ("SST-2 dev", dev), ("CR", cr))
    }
    print(
        f"model trained on {len(parts['train'])} SST-2 train rows ({len(parts['validation'])} validation);"
        f" reference: {reference.rows} held-out rows, {len(reference.embeddings)} embeddings kept;"
        " accuracy " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()),
        flush=True,
    )
    print(f"{args.windows} windows of {WINDOW} per scenario, default MonitoringConfig", flush=True)
    # Detection rates do not depend on BLAS threads; one thread keeps the many small fits from
    # oversubscribing two shared cores. The timed check below runs with the library defaults.
    with threadpool_limits(1):
        tally = run_windows(cfg, reference, reference_descriptors, dev, cr, args.windows, args.seed)
    print_tables(cfg, tally, args.windows)

    print(f"\ntiming the check on {args.rows:,} vs {args.rows:,} rows ({TARGET_MIX:.0%} CR)", flush=True)
    timing = time_check(cfg, held_out, parts["train"], dev, cr, args.rows, args.seed)
    print(f"reference statistics (precomputed, not in the check): {timing.precompute_s:.1f} s")
    print(f"descriptor check alone (baseline): {timing.baseline_s:.1f} s")
    print(
        f"full check (descriptors + every signal): {timing.full_s:.1f} s, {ratio(timing.full_s, timing.baseline_s)} the baseline"
    )
    print(f"one Evidently EmbeddingsDrift report, {WINDOW}-row window: {timing.evidently_report_s:.1f} s")

    n = args.windows
    at_target = {row: tally.fired.get((TARGET_MIX, row), 0) / n for row in ("policy", "descriptors")}
    print(
        f"policy vs descriptors alone: detection at {TARGET_MIX:.0%} CR {at_target['policy']:.0%} vs"
        f" {at_target['descriptors']:.0%} ({ratio(at_target['policy'], at_target['descriptors'])}),"
        f" false alarms {tally.fired.get((0.0, 'policy'), 0)}/{n} vs {tally.fired.get((0.0, 'descriptors'), 0)}/{n}"
    )
    errors = {
        s: float(np.mean(np.abs(np.diff(np.array(tally.accuracy[s]), axis=1)))) * 100 for s in (0.0, *MIXES)
    }
    checks = {
        f"policy false alarms on clean windows: {tally.fired.get((0.0, 'policy'), 0)}/{n} (target {TARGET_FALSE_ALARMS})": (
            tally.fired.get((0.0, "policy"), 0) <= TARGET_FALSE_ALARMS
        ),
        f"policy detection at {TARGET_MIX:.0%} CR: {at_target['policy']:.0%} (target >= {TARGET_DETECTION:.0%})": (
            at_target["policy"] >= TARGET_DETECTION
        ),
        f"estimated accuracy mean abs error, worst scenario: {max(errors.values()):.2f} points (target <= {TARGET_ERROR_POINTS:g})": (
            max(errors.values()) <= TARGET_ERROR_POINTS
        ),
        f"check on {args.rows:,} vs {args.rows:,} rows: {timing.full_s:.1f} s (target < {TARGET_SECONDS:.0f} s)": (
            timing.full_s < TARGET_SECONDS
        ),
    }
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

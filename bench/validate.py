"""Benchmark: the data-validation suite on a million generated rows, against plain pandas.

What it measures
    The full suite, :func:`refinery.data.validate.validate_data` (Great Expectations), on N generated
    review rows (default 1,000,000) split over a train, a validation and a test file (80/10/10), with the
    thresholds of configs/demo.yaml. It reads the files, checks every rule and writes every report.

    The baseline: the same rules written directly in vectorised pandas in this file. It reads the same
    files with the same reader (:func:`refinery.data.load.read_table`) and computes the per-row text
    features with :mod:`refinery.data.text` (plain vectorised pandas: one definition of "the same text"),
    then decides each rule with a comparison or two; no Great Expectations, no reports.

How
    The data is generated once (seeded numpy) and written to CSV in a temporary folder. Each measurement
    runs in a fresh Python subprocess, so its peak resident memory is its own (read from ``VmHWM``; see
    :func:`_peak_rss_mib`); the clock (``time.perf_counter``) starts after the imports and stops when the
    result is in hand. With ``--repeat R`` each side runs R times; the best time and the highest peak are
    kept.

    Both sides must agree on which rules fail; the generated data breaks a few on purpose (blank texts,
    damaged characters, conflicting labels, texts copied into the test split) and keeps the others.

Targets (issue 4): the suite under 60 s for 1,000,000 rows, and within 5x of the baseline.

Run:  python bench/validate.py [--rows N] [--repeat R] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from refinery.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
TARGET_SECONDS = 60.0
TARGET_RATIO = 5.0

# --------------------------------------------------------------------------------------------------
# Generated data
# --------------------------------------------------------------------------------------------------

# Vocabularies, space-separated.
NEUTRAL = (
    "the a this that it its my our we i they was is were has had have and but so with without for of to in "
    "on at after before during about very really quite rather just still even also only again movie film "
    "story plot ending acting cast scene music score director script camera product battery screen sound "
    "price delivery box manual phone speaker charger cable case lens picture colour size weight button "
    "menu app update service support store order week day month year time first second last every new "
    "old two three one hour night morning kids friends family husband wife work home car trip gift"
)
POSITIVE = (
    "great excellent loved wonderful perfect superb enjoyable brilliant reliable comfortable charming "
    "delightful sharp fast solid recommend beautiful funny moving clever happy"
)
NEGATIVE = (
    "terrible awful hated boring broken poor disappointing useless slow cheap dull flimsy annoying "
    "pointless weak returned refund bland noisy worst"
)
SENTIMENT_WORD_RATE = 0.15
POSITIVE_SHARE = 0.55
FLIPPED = {"positive": "negative", "negative": "positive"}


@dataclass(frozen=True)
class Problems:
    """How many rows of each kind of damage a split gets (shares of its rows, at least one each)."""

    exact_duplicates: float = 0.005
    near_duplicates: float = 0.003
    conflicting: float = 0.0003
    blank: float = 0.0001
    damaged: float = 0.00003
    not_alphabetic: float = 0.0002
    too_long: float = 0.0001
    leaked: float = 0.0002  # validation and test only: rows copied (some near-copied) from train


def _clean_reviews(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` review-like sentences: neutral words with sentiment words of the row's label mixed in."""
    labels = np.where(rng.random(n) < POSITIVE_SHARE, "positive", "negative")
    # Word counts: mostly 8-40 words, a long tail up to 150 (reviews, not tweets).
    lengths = np.clip(rng.lognormal(mean=2.9, sigma=0.5, size=n).astype(int), 4, 150)
    total = int(lengths.sum())
    neutral, positive_words, negative_words = (
        np.asarray(v.split(), dtype=object) for v in (NEUTRAL, POSITIVE, NEGATIVE)
    )
    words = neutral[rng.integers(0, len(neutral), total)]
    row_of_word = np.repeat(np.arange(n), lengths)
    sentiment = rng.random(total) < SENTIMENT_WORD_RATE
    positive = labels[row_of_word] == "positive"
    for mask, vocabulary in ((sentiment & positive, positive_words), (sentiment & ~positive, negative_words)):
        words[mask] = vocabulary[rng.integers(0, len(vocabulary), mask.sum())]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    punctuation = np.asarray([".", ".", ".", "!", "!!", "?", " :)", ""], dtype=object)
    stops = punctuation[rng.integers(0, len(punctuation), n)]
    flat = words.tolist()
    texts = [
        " ".join(flat[s:e]).capitalize() + stop
        for s, e, stop in zip(starts.tolist(), ends.tolist(), stops.tolist(), strict=True)
    ]
    return pd.DataFrame({"text": texts, "label": labels})


def _near_copy(text: str, rng: np.random.Generator) -> str:
    """The same review as far as the normalised text goes: other case, punctuation or spacing."""
    variant = int(rng.integers(0, 3))
    if variant == 0:
        return text.upper()
    if variant == 1:
        return text.rstrip(".!? :)") + "!!!"
    return "  " + text.replace(" ", "  ", 2) + " "


def _copy_rows(
    text: np.ndarray,
    label: np.ndarray,
    kind: str,
    targets: list[int],
    originals: list[int],
    rng: np.random.Generator,
) -> None:
    """Overwrite ``targets`` with copies of ``originals``: exact, near (``near_duplicates``), or with the
    other label (``conflicting``)."""
    for target, original in zip(targets, originals, strict=True):
        copied = text[original]
        text[target] = copied if kind == "exact_duplicates" else _near_copy(copied, rng)
        label[target] = FLIPPED[label[original]] if kind == "conflicting" else label[original]


def make_split(
    n: int, rng: np.random.Generator, problems: Problems, source: pd.DataFrame | None
) -> pd.DataFrame:
    """One split of ``n`` rows with the damage ``problems`` asks for; ``source`` (the train split) is
    where leaked rows come from."""
    frame = _clean_reviews(n, rng)
    text, label = frame["text"].to_numpy(dtype=object), frame["label"].to_numpy(dtype=object)
    order = iter(rng.permutation(n).tolist())  # distinct rows for every kind of damage

    def rows(share: float) -> list[int]:
        return [next(order) for _ in range(max(1, round(share * n)))]

    def originals(k: int) -> list[int]:  # clean rows to copy from (may be copied more than once)
        return [next(order) for _ in range(k)]

    for kind in ("exact_duplicates", "near_duplicates", "conflicting"):
        targets = rows(getattr(problems, kind))
        _copy_rows(text, label, kind, targets, originals(len(targets)), rng)
    for i, target in enumerate(rows(problems.blank)):
        text[target] = ("", "   ", "\t")[i % 3]
    for target in rows(problems.damaged):
        text[target] = text[target].replace(" ", " \ufffd", 1) if target % 2 else text[target] + "\x07"
    for target in rows(problems.not_alphabetic):
        text[target] = " ".join(f"{v:08x}" for v in rng.integers(0, 2**32, 4).tolist())
    for target in rows(problems.too_long):
        text[target] = " ".join([text[target]] * (2100 // max(1, len(text[target])) + 1))
    if source is not None:
        for i, target in enumerate(rows(problems.leaked)):
            original = int(rng.integers(0, len(source)))
            copied = str(source["text"].iat[original])
            text[target] = copied if i % 2 else _near_copy(copied, rng)
            label[target] = source["label"].iat[original]
    return pd.DataFrame({"text": text, "label": label})


def write_data(rows: int, seed: int, folder: Path) -> dict[str, Path]:
    """Generate ``rows`` rows over the three splits and write one CSV file per split."""
    rng = np.random.default_rng(seed)
    sizes = {name: round(rows * share) for name, share in SPLITS.items()}
    sizes["test"] = rows - sizes["train"] - sizes["validation"]
    train = make_split(sizes["train"], rng, Problems(), source=None)
    frames = {"train": train} | {
        name: make_split(sizes[name], rng, Problems(), train) for name in ("validation", "test")
    }
    paths = {name: folder / f"{name}.csv" for name in frames}
    for name, frame in frames.items():
        frame.to_csv(paths[name], index=False)
    return paths


# --------------------------------------------------------------------------------------------------
# The two sides, each run in its own subprocess
# --------------------------------------------------------------------------------------------------


Failed = dict[str, int | None]  # rule name -> offending rows (share rules), None for the others
SHARE_RULES = (
    "missing_text",
    "text_length",
    "exact_duplicates",
    "normalised_duplicates",
    "conflicting_labels",
    "leakage",
    "encoding_damage",
    "alphabetic",
)


@dataclass(frozen=True)
class Measurement:
    """What one subprocess reports: time, memory and the rules that failed."""

    seconds: float
    peak_rss_mib: float
    imports_rss_mib: float  # the floor: interpreter and imports, before any data is read
    failed: Failed


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far.

    Linux carries ``ru_maxrss`` over a fork and exec, so a subprocess started by a process holding
    900 MiB of generated rows would report at least 900 MiB; ``VmHWM`` belongs to the process's own
    address space and starts afresh at exec.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _config(paths: dict[str, str], state: str) -> RunConfig:
    """configs/demo.yaml (its thresholds) on the three generated files, state under ``state``."""
    from refinery.config import load_config

    overrides = [
        f"state_dir={state}",
        f"data.uri={paths['train']}",
        f"data.validation_uri={paths['validation']}",
        f"data.test_uri={paths['test']}",
    ]
    return load_config(DEMO_CONFIG, overrides, base=REPO)


def run_suite(paths: dict[str, str], state: str) -> Failed:
    """The full suite as the pipeline runs it: read every file, check, write every report."""
    from refinery.data.validate import validate_data

    report = validate_data(_config(paths, state), Path(state) / "validation")
    return {
        f.check: f.observed if f.check in SHARE_RULES else None for f in [*report.failures, *report.warnings]
    }


def run_baseline(paths: dict[str, str], state: str) -> Failed:
    """The same rules in plain vectorised pandas: features per row, then one comparison per rule.

    The three files are checked as one table (a rule's share is of all rows), duplicates count within
    a file, leakage counts rows of a later file whose normalised text is in an earlier one. Rows with
    no text count only for missing_text; shares of length and letters are of the rows with text.
    """
    from pandas.api.types import infer_dtype

    from refinery.data import text as textrules
    from refinery.data.load import read_table

    data = _config(paths, state).data
    rules = data.validation
    files = data.split_uris()
    frames = [read_table(data.model_copy(update={"uri": uri})) for uri in files.values()]
    frame = pd.concat(frames, ignore_index=True)
    split = pd.Series(np.repeat(list(files), [len(f) for f in frames]), index=frame.index)
    n = len(frame)

    # Per-row features, from the one definition of "the same text" in refinery.data.text.
    raw, label = frame[data.text_column], frame[data.label_column]
    as_text = textrules.as_text(raw)
    clean = textrules.clean_texts(as_text)
    has_text = clean != ""
    chars = as_text.str.len()[has_text]
    alpha = textrules.alphabetic_share(as_text)[has_text]
    damaged = textrules.damaged_characters(as_text) > 0
    exact = textrules.key_hashes(as_text)[has_text]
    keys = textrules.key_hashes(textrules.comparison_keys(clean, clean=True))[has_text]
    in_split = split[has_text]

    # Offending rows per share rule.
    labelled = label[has_text].notna()
    labels_per_key = label[has_text][labelled].groupby(keys[labelled]).transform("nunique")
    leaked = pd.Series(False, index=keys.index)
    for i, later in enumerate(list(files)[1:], start=1):
        earlier = keys[in_split.isin(list(files)[:i])]
        leaked |= (in_split == later) & keys.isin(earlier)
    length = rules.text_length
    offending = {
        "missing_text": int((~has_text).sum()),
        "text_length": int(((chars < length.min_chars) | (chars > length.max_chars)).sum()),
        "exact_duplicates": int(pd.DataFrame({"s": in_split, "h": exact}).duplicated().sum()),
        "normalised_duplicates": int(pd.DataFrame({"s": in_split, "h": keys}).duplicated().sum()),
        "conflicting_labels": int((labels_per_key > 1).sum()),
        "leakage": int(leaked.sum()),
        "encoding_damage": int(damaged.sum()),
        "alphabetic": int((alpha < rules.alphabetic.min_alpha).sum()),
    }
    # Length and letters are measured on rows with text; the other shares are of all rows.
    out_of = {name: n for name in offending} | {"text_length": len(chars), "alphabetic": len(alpha)}

    failed: Failed = {}
    for name, count in offending.items():
        rule = getattr(rules, name)
        if rule.severity != "off" and count > rule.max_share * out_of[name]:
            failed[name] = count
    if infer_dtype(raw.dropna(), skipna=True) not in ("string", "empty"):
        failed["text_type"] = None
    extra = set(frame.columns) - {data.text_column, data.label_column, data.group_column}
    if extra and rules.extra_columns != "ignore":
        failed["extra_columns"] = None
    if label.isna().any() or not label.dropna().isin(data.labels).all():
        failed["labels"] = None
    per_class = label.value_counts().reindex(list(data.labels), fill_value=0)
    table_rules = {
        "min_rows": n < rules.min_rows.min,
        "min_rows_per_class": bool((per_class < rules.min_rows_per_class.min).any()),
        "class_imbalance": per_class.min() == 0
        or per_class.max() / per_class.min() > rules.class_imbalance.max_ratio,
    }
    for name, broken in table_rules.items():
        if broken and getattr(rules, name).severity != "off":
            failed[name] = None
    return failed


def _worker(side: str, paths: dict[str, str], state: str) -> None:
    """Entry point of a measurement subprocess: import, time one run, print a Measurement as JSON."""
    import refinery.config
    import refinery.data.load
    import refinery.data.text

    if side == "suite":
        import great_expectations  # noqa: F401

        import refinery.data.validate  # noqa: F401
    imports_rss = _peak_rss_mib()
    run = run_suite if side == "suite" else run_baseline
    started = time.perf_counter()
    failed = run(paths, state)
    seconds = time.perf_counter() - started
    print(json.dumps(asdict(Measurement(seconds, _peak_rss_mib(), imports_rss, failed))))


def measure(side: str, paths: dict[str, Path], folder: Path, repeat: int) -> Measurement:
    """Run ``side`` ``repeat`` times, each in a fresh subprocess; keep the best time and highest peak."""
    runs: list[Measurement] = []
    for i in range(repeat):
        state = folder / f"{side}-{i}"
        argv = [sys.executable, __file__, "--worker", side, "--state", str(state)]
        argv += [f"--{name}={path}" for name, path in paths.items()]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{side} run failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        runs.append(Measurement(**json.loads(done.stdout.strip().splitlines()[-1])))
        print(f"  run {i + 1}/{repeat}: {runs[-1].seconds:.1f} s", flush=True)
    best = min(runs, key=lambda m: m.seconds)
    return replace(best, peak_rss_mib=max(m.peak_rss_mib for m in runs))


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows over all three files")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best time is kept")
    parser.add_argument("--seed", type=int, default=7)
    # Internal: a measurement subprocess.
    parser.add_argument("--worker", choices=["suite", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    for name in SPLITS:
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _report(rows: int, suite: Measurement, baseline: Measurement) -> bool:
    """Print the table, the targets and any disagreement; True when everything holds."""
    header = ("", "rows", "seconds", "rows/s", "peak RSS MiB", "RSS after imports MiB")
    print("\n{:9}{:>10}{:>9}{:>10}{:>14}{:>23}".format(*header))
    for name, m in (("suite", suite), ("baseline", baseline)):
        cells = (
            name,
            f"{rows:,}",
            f"{m.seconds:.1f}",
            f"{rows / m.seconds:,.0f}",
            m.peak_rss_mib,
            m.imports_rss_mib,
        )
        print("{:9}{:>10}{:>9}{:>10}{:>14.0f}{:>23.0f}".format(*cells))
    ratio = suite.seconds / baseline.seconds
    print(
        f"ratio suite/baseline: {ratio:.2f}x time, {suite.peak_rss_mib / baseline.peak_rss_mib:.2f}x peak RSS"
    )
    print("seconds: read the files, check every rule (suite: and write the reports); imports not timed.")
    print("The baseline takes its per-row text features from refinery.data.text (plain vectorised pandas).")

    print(f"\nfailed rules, suite:    {_listing(suite.failed)}")
    print(f"failed rules, baseline: {_listing(baseline.failed)}")
    agree = suite.failed == baseline.failed
    for rule in sorted(suite.failed.keys() | baseline.failed.keys()):
        verdicts = [_verdict(m.failed, rule) for m in (suite, baseline)]
        if verdicts[0] != verdicts[1]:
            print(f"DISAGREE {rule}: suite {verdicts[0]}, baseline {verdicts[1]}")
    checks = {
        f"suite under {TARGET_SECONDS:.0f} s": suite.seconds < TARGET_SECONDS,
        f"suite within {TARGET_RATIO:.0f}x of the baseline": ratio <= TARGET_RATIO,
        "suite and baseline fail the same rules": agree,
    }
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(checks.values())


def _verdict(failed: Failed, rule: str) -> str:
    if rule not in failed:
        return "passes"
    return "fails" if failed[rule] is None else f"fails ({failed[rule]} rows)"


def _listing(failed: Failed) -> str:
    return ", ".join(f"{k} ({v} rows)" if v is not None else k for k, v in sorted(failed.items())) or "(none)"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        _worker(args.worker, {name: getattr(args, name) for name in SPLITS}, args.state)
        return 0
    with tempfile.TemporaryDirectory(prefix="refinery-bench-") as tmp:
        folder = Path(tmp)
        print(f"generating and writing {args.rows:,} rows (seed {args.seed}) to {folder} ...", flush=True)
        started = time.perf_counter()
        paths = write_data(args.rows, args.seed, folder)
        size = sum(p.stat().st_size for p in paths.values()) / 2**20
        print(
            f"  {len(paths)} CSV files, {size:.0f} MiB, in {time.perf_counter() - started:.1f} s", flush=True
        )
        print("running the suite (validate_data, Great Expectations, reports) ...", flush=True)
        suite = measure("suite", paths, folder, args.repeat)
        print("running the baseline (the same rules in plain pandas) ...", flush=True)
        baseline = measure("baseline", paths, folder, args.repeat)
    return 0 if _report(args.rows, suite, baseline) else 1


if __name__ == "__main__":
    sys.exit(main())

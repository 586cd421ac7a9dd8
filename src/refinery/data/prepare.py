"""Preparing validated data for training: clean, resolve conflicting labels, deduplicate, split, balance,
augment, and record the reference profile.

Steps, in order (every count goes into :class:`PreparedData` and the step's metrics):

1. Every file of :meth:`~refinery.config.DataConfig.split_uris` is read (``data.uri``, and
   ``data.validation_uri``/``data.test_uri`` when given) and its SHA-256 recorded.
2. Within each file (:mod:`refinery.data.clean`): texts are cleaned
   (:func:`~refinery.data.text.clean_texts`: Unicode NFC, invisible characters dropped, whitespace
   collapsed), blank rows dropped; texts seen with several labels (by
   :func:`~refinery.data.text.comparison_keys`) are resolved by ``data.prepare.conflicting_labels``
   (``drop`` all their rows, or keep the ``majority`` label's rows, dropping them all on a tie); then
   exact duplicates (same clean text) and normalised duplicates (same comparison key) are dropped, the
   first occurrence kept.
3. Splits that are not given are split off ``data.uri``, seeded and stratified by label; the fractions
   of ``data.split`` are shares of ``data.uri``'s rows. With ``data.group_column`` the split is a
   :class:`~sklearn.model_selection.StratifiedGroupKFold` fold (``round(1 / fraction)`` folds), so
   the rows of one group never straddle splits and the fractions are only approximated.
4. Leakage: a row of a later split (train < validation < test) whose comparison key occurs in an
   earlier split is removed from the later one, so no text is ever written to two splits.
5. New labelled rows (:mod:`refinery.data.sources`: ``data.incoming_uri`` and the service's feedback),
   less those whose text a base file holds, are cleaned like a file; a hash of each row's text sends
   ``data.new_test_fraction`` of them to the test split, the rest to training. The test split then
   carries a ``domain`` column: ``established`` for ``data.uri``'s test rows, ``new`` for these (the two
   test sets the gate judges). Beside new rows, ``data.replay_share`` of the base training rows is kept
   (a stratified, seeded sample).
6. The training split only: balanced by ``data.prepare.balance`` (loss weights recorded as
   ``class_weights``, or seeded over-/under-sampling to the largest/smallest class), then augmented
   when ``data.prepare.augment.enabled`` (:mod:`refinery.data.augment`).

Output layout (the contract the training, evaluation, registry and monitoring stages read):

- ``train.parquet``, ``validation.parquet``, ``test.parquet``: columns ``text`` and ``label`` (strings);
  validation and test also hold ``data.slice_columns`` (strings, a missing value as ``(missing)``),
- ``reference.parquet``: :func:`~refinery.monitoring.descriptors.text_descriptors` of the training texts
  plus ``label``, the per-text reference drift monitoring compares served requests against,
- ``profile.json``: :class:`~refinery.data.profile.DataProfile` of the training texts (length and word
  count distributions, label distribution, vocabulary statistics),
- ``prepared.json``: :class:`PreparedData` (``class_weights`` is what fine-tuning weights its loss by).

The reference and the profile describe the training split as cleaned and split, before balancing and
augmentation: they stand for the data the model learns from, not for copies made of it.

Everything is written into a temporary folder next to ``out_dir`` and moved in only when complete
(:func:`refinery.atomic.staged_dir`, ``prepared.json`` last), so a failure leaves no partial dataset
behind.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refinery.atomic import staged_dir
from refinery.config import RunConfig
from refinery.data.augment import augment_rows, read_synonyms
from refinery.data.clean import GROUP, KEY, MISSING_SLICE, CleanedFile, clean_file
from refinery.data.load import file_sha256, read_table
from refinery.data.profile import profile_texts
from refinery.data.sources import DOMAIN_SLICE, ESTABLISHED, NEW, is_new_test_row, read_new_rows
from refinery.errors import DataError
from refinery.monitoring.descriptors import text_descriptors
from refinery.results import Record, load_result, to_jsonable

SPLITS = ("train", "validation", "test")
OUTPUT_FILES = (*(f"{name}.parquet" for name in SPLITS), "reference.parquet", "profile.json")
PREPARED_JSON = "prepared.json"


@dataclass(frozen=True)
class PreparedData(Record):
    """What :func:`prepare_data` did and where it put the result.

    Row counts are summed over all input files; the identity
    ``rows_in - blank_removed - conflicting_removed - exact_duplicates_removed
    - normalised_duplicates_removed - new_base_duplicates_removed - leaked_removed - replay_removed
    + balance_added - balance_removed + augmented_added == rows_out`` always holds.

    Attributes:
        data_uri: The training data's location (``data.uri``).
        data_sha256: SHA-256 of that file's bytes (data lineage).
        source_uris: The file each given split was read from: ``train`` (``data.uri``), and
            ``validation``/``test`` when those splits were given.
        source_sha256: SHA-256 of each of those files, by the same keys.
        source_rows: Rows read from each of those files.
        rows_in: Rows read, all files together.
        blank_removed: Rows dropped because their text was missing or blank after cleaning.
        texts_changed: Non-blank rows whose text cleaning changed (Unicode form, invisible characters,
            spaces), counted before conflicts and duplicates are dropped.
        conflicting_texts: Texts (by comparison key) that occurred with more than one label.
        conflicting_removed: Rows of those texts dropped by the ``data.prepare.conflicting_labels`` policy.
        exact_duplicates_removed: Rows repeating an earlier row's clean text.
        normalised_duplicates_removed: Rows repeating an earlier row's text once case, accents,
            punctuation and spacing are ignored (and not exactly).
        leaked_removed: Rows of a given later split whose text occurs in an earlier split.
        balance_added: Training rows added by oversampling.
        balance_removed: Training rows removed by undersampling.
        augmented_added: Augmented training rows added.
        augmented_skipped: Augmented copies left out because they matched an existing text.
        rows_out: Rows written (the sum of ``split_sizes``).
        split_sizes: Rows per split (``train``, ``validation``, ``test``), as written.
        label_counts: Rows per label over all written rows, in declared label order.
        split_label_counts: Rows per label in each split, as written.
        class_weights: Loss weight per declared label, ``n / (k * count)`` over the training split, when
            ``data.prepare.balance`` is ``class_weights``; else ``None``.
        seed: The seed of the split, the resampling and the augmentation (``data.split.seed``).
        lineage: Every source the dataset was assembled from, with its content hash: ``role`` (a split
            name for the base files, ``incoming`` or ``feedback`` for new rows), ``uri``, ``sha256``,
            ``rows`` (and ``through_id`` for feedback).
        new_rows: New labelled rows kept after cleaning, by split (``train``, ``test``); empty without any.
        new_base_duplicates_removed: New rows dropped because their text is already in a base file.
        replay_removed: Base training rows left out by ``data.replay_share``.
        paths: ``train``, ``validation``, ``test``, ``reference``, ``profile`` and ``prepared`` file paths.
    """

    data_uri: str
    data_sha256: str
    source_uris: dict[str, str]
    source_sha256: dict[str, str]
    source_rows: dict[str, int]
    rows_in: int
    blank_removed: int
    texts_changed: int
    conflicting_texts: int
    conflicting_removed: int
    exact_duplicates_removed: int
    normalised_duplicates_removed: int
    leaked_removed: int
    balance_added: int
    balance_removed: int
    augmented_added: int
    augmented_skipped: int
    rows_out: int
    split_sizes: dict[str, int]
    label_counts: dict[str, int]
    split_label_counts: dict[str, dict[str, int]]
    class_weights: dict[str, float] | None
    seed: int
    lineage: list[dict[str, Any]] = field(default_factory=list)
    new_rows: dict[str, int] = field(default_factory=dict)
    new_base_duplicates_removed: int = 0
    replay_removed: int = 0
    paths: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Every count of what preparation read, removed, changed, added and wrote, flat, for the step's
        KFP Metrics (label names are made safe for metric names)."""
        counts: dict[str, float] = {
            name: float(getattr(self, name))
            for name in (
                "rows_in",
                "blank_removed",
                "texts_changed",
                "conflicting_texts",
                "conflicting_removed",
                "exact_duplicates_removed",
                "normalised_duplicates_removed",
                "leaked_removed",
                "new_base_duplicates_removed",
                "replay_removed",
                "balance_added",
                "balance_removed",
                "augmented_added",
                "augmented_skipped",
                "rows_out",
            )
        }
        counts.update({f"{source}_file_rows": float(n) for source, n in self.source_rows.items()})
        counts.update({f"{split}_rows": float(n) for split, n in self.split_sizes.items()})
        counts.update({f"new_{split}_rows": float(n) for split, n in self.new_rows.items()})
        for split, per_label in self.split_label_counts.items():
            counts.update({_metric_name(f"{split}_rows_{label}"): float(n) for label, n in per_label.items()})
        for label, weight in (self.class_weights or {}).items():
            counts[_metric_name(f"class_weight_{label}")] = float(weight)
        return counts

    @classmethod
    def read(cls, data_dir: Path) -> PreparedData:
        """Read ``prepared.json`` from a prepared dataset folder.

        Raises:
            DataError: The folder holds no readable ``prepared.json``.
        """
        return load_result(
            cls.from_dict,
            Path(data_dir) / PREPARED_JSON,
            default_name=PREPARED_JSON,
            what="prepared-data record",
            error=DataError,
        )


def _metric_name(name: str) -> str:
    # Labels can hold anything; metric names keep to letters, digits and _ - .
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def _counts(labels: pd.Series, declared: tuple[str, ...]) -> dict[str, int]:
    counts = labels.value_counts()
    return {label: int(counts.get(label, 0)) for label in declared}


def _hold_out(
    frame: pd.DataFrame, fraction: float, cfg: RunConfig, name: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``fraction`` of ``frame`` off as split ``name``: stratified by label, by groups when set."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    data, split = cfg.data, cfg.data.split
    try:
        if data.group_column is None:
            rest, held = train_test_split(
                frame, test_size=fraction, random_state=split.seed, stratify=frame["label"]
            )
        else:
            folds = max(2, round(1 / fraction))
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=split.seed)
            with warnings.catch_warnings():
                # "The least populated class has fewer members than n_splits": the fold is still usable.
                warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
                rest_at, held_at = next(splitter.split(np.zeros(len(frame)), frame["label"], frame[GROUP]))
            rest, held = frame.iloc[np.sort(rest_at)], frame.iloc[np.sort(held_at)]
            if rest.empty or held.empty:
                raise ValueError(f"the {name} fold or the rest of the rows is empty")
    except ValueError as exc:
        counts = frame["label"].value_counts().to_dict()
        groups = (
            f", {frame[GROUP].nunique()} groups in '{data.group_column}' (data.group_column)"
            if data.group_column
            else ""
        )
        raise DataError(
            f"{data.uri}: cannot split {len(frame)} rows (per label: {counts}{groups}) into a stratified "
            f"{name} split with data.split.validation_fraction={split.validation_fraction}, "
            f"data.split.test_fraction={split.test_fraction}: {exc}"
        ) from None
    return rest, held


def _split(
    train_source: pd.DataFrame, given: dict[str, pd.DataFrame], cfg: RunConfig
) -> dict[str, pd.DataFrame]:
    """The three splits: the given ones, the others split off ``train_source``."""
    split = cfg.data.split
    parts = dict(given)
    rest = train_source
    if "test" not in parts:
        rest, parts["test"] = _hold_out(rest, split.test_fraction, cfg, "test")
    if "validation" not in parts:
        # The fractions are shares of data.uri's rows; rescale to what is left after the test split.
        share = len(rest) / len(train_source)
        rest, parts["validation"] = _hold_out(rest, split.validation_fraction / share, cfg, "validation")
    parts["train"] = rest
    return {name: parts[name].reset_index(drop=True) for name in SPLITS}


def _remove_leakage(
    parts: dict[str, pd.DataFrame], sources: dict[str, str]
) -> tuple[dict[str, pd.DataFrame], int]:
    """Drop from each split the rows whose comparison key occurs in an earlier split."""
    seen: set[int] = set()
    out: dict[str, pd.DataFrame] = {}
    removed = 0
    for name in SPLITS:
        part = parts[name]
        leaked = part[KEY].isin(seen).to_numpy()
        if leaked.any():
            removed += int(leaked.sum())
            part = part[~leaked].reset_index(drop=True)
            if part.empty:
                where = sources.get(name, sources["train"])
                raise DataError(
                    f"{where}: the {name} split is empty after removing {int(leaked.sum())} row(s) whose "
                    "text also occurs in an earlier split (validate the data first: leakage)"
                )
        seen.update(part[KEY].tolist())
        out[name] = part
    return out, removed


def _balance(train: pd.DataFrame, cfg: RunConfig) -> tuple[pd.DataFrame, dict[str, float] | None, int, int]:
    """Apply ``data.prepare.balance`` to the training split: (rows, class weights, added, removed)."""
    policy = cfg.data.prepare.balance
    declared = cfg.data.labels
    if policy == "none":
        return train, None, 0, 0
    counts = _counts(train["label"], declared)
    absent = [label for label, n in counts.items() if n == 0]
    if absent:
        raise DataError(
            f"data.prepare.balance={policy}: the training split has no rows of label(s) {absent} "
            f"(per label: {counts}); cannot balance classes that are absent"
        )
    if policy == "class_weights":
        n, k = len(train), len(declared)
        return train, {label: round(n / (k * c), 6) for label, c in counts.items()}, 0, 0
    rng = np.random.default_rng(cfg.data.split.seed)
    labels = train["label"].to_numpy()
    if policy == "oversample":
        target = max(counts.values())
        extra: list[pd.DataFrame] = []
        for label in declared:
            rows = train[labels == label]
            copies, remainder = divmod(target - len(rows), len(rows))
            # Whole copies first, then a seeded sample without replacement: every row is repeated
            # as evenly as the target allows.
            picked = np.sort(rng.choice(len(rows), size=remainder, replace=False))
            extra.extend([rows] * copies + [rows.iloc[picked]])
        added = pd.concat(extra, ignore_index=True)
        return pd.concat([train, added], ignore_index=True), None, len(added), 0
    target = min(counts.values())
    kept: list[np.ndarray] = []
    for label in declared:
        at = np.flatnonzero(labels == label)
        kept.append(rng.choice(at, size=target, replace=False))
    keep = np.sort(np.concatenate(kept))
    return train.iloc[keep].reset_index(drop=True), None, 0, len(train) - len(keep)


def _read_sources(cfg: RunConfig, frame: pd.DataFrame | None) -> dict[str, tuple[pd.DataFrame, str]]:
    """Each input file's table and SHA-256, by split name."""
    sources: dict[str, tuple[pd.DataFrame, str]] = {}
    for name, uri in cfg.data.split_uris().items():
        data = cfg.data.model_copy(update={"uri": uri})
        table = frame if name == "train" and frame is not None else read_table(data)
        sources[name] = (table, file_sha256(uri))
    return sources


def _replay(train: pd.DataFrame, cfg: RunConfig) -> tuple[pd.DataFrame, int]:
    """Keep ``data.replay_share`` of the base training rows: a stratified, seeded sample."""
    from sklearn.model_selection import train_test_split

    share = cfg.data.replay_share
    if share >= 1:
        return train, 0
    try:
        kept, _ = train_test_split(
            train, train_size=share, random_state=cfg.data.split.seed, stratify=train["label"]
        )
    except ValueError as exc:
        raise DataError(
            f"data.replay_share={share}: cannot sample {len(train)} base training rows stratified by label"
            f" (per label: {train['label'].value_counts().to_dict()}): {exc}"
        ) from None
    return kept.reset_index(drop=True), len(train) - len(kept)


def _add_new_rows(
    parts: dict[str, pd.DataFrame], new: CleanedFile, cfg: RunConfig
) -> tuple[dict[str, pd.DataFrame], dict[str, int], int]:
    """Send the new rows to training and the ``new`` test set; mark the test split's domains."""
    table = new.table
    to_test = is_new_test_row(table[KEY], cfg.data.new_test_fraction).to_numpy()
    base_train, replay_removed = _replay(parts["train"], cfg)
    out = dict(parts)
    out["train"] = pd.concat([base_train, table[~to_test]], ignore_index=True)
    out["test"] = pd.concat(
        [parts["test"].assign(**{DOMAIN_SLICE: ESTABLISHED}), table[to_test].assign(**{DOMAIN_SLICE: NEW})],
        ignore_index=True,
    )
    return out, {"train": int((~to_test).sum()), "test": int(to_test.sum())}, replay_removed


def prepare_data(
    cfg: RunConfig, out_dir: Path, frame: pd.DataFrame | None = None, feedback_through: int = 0
) -> PreparedData:
    """Clean, deduplicate, split, balance and augment the labelled data; write the prepared dataset folder.

    The steps and the output layout are described in the module docstring.

    Args:
        cfg: The run configuration (``data`` section: files, columns, labels, ``split`` and ``prepare``).
        out_dir: The prepared dataset folder (created; existing files of the same names are replaced).
        frame: The training data (``data.uri``), when already read; by default every file is read with
            :func:`~refinery.data.load.read_table`. Data hashes are always computed from the files.
        feedback_through: The newest service feedback id the run reads (with ``data.feedback``).

    Returns:
        Counts, data hashes, class weights and the written paths.

    Raises:
        DataError: An input or the synonym file cannot be read or is malformed, a file lacks a
            configured column, holds missing or undeclared labels or (with ``data.group_column``) rows
            without a group, a file or split is left empty, there are too few rows (or groups) per label
            to split, or a class to balance has no training rows. Nothing is written then.
    """
    data = cfg.data
    out_dir = Path(out_dir)
    augment = data.prepare.augment
    synonyms = read_synonyms(augment.synonyms) if augment.enabled and augment.synonyms else None
    uris = data.split_uris()
    sources = _read_sources(cfg, frame)
    new = read_new_rows(cfg, [table for table, _ in sources.values()], feedback_through)
    splitting = not {"validation", "test"} <= uris.keys()
    cleaned = {
        name: clean_file(table, cfg, uris[name], group=(name == "train" and splitting))
        for name, (table, _) in sources.items()
    }

    given = {name: c.table for name, c in cleaned.items() if name != "train"}
    parts = _split(cleaned["train"].table, given, cfg)
    new_rows: dict[str, int] = {}
    replay_removed = 0
    slices = list(cfg.data.slice_columns)
    if new is not None and len(new.frame):
        # New rows carry no slice values; they are the `new` domain of the test split instead.
        filled = new.frame.assign(**{c: MISSING_SLICE for c in slices if c not in new.frame.columns})
        cleaned[NEW] = clean_file(filled, cfg, "the new labelled rows", group=False)
        parts, new_rows, replay_removed = _add_new_rows(parts, cleaned[NEW], cfg)
        slices.append(DOMAIN_SLICE)
    parts, leaked_removed = _remove_leakage(parts, uris)
    # Slice columns stay in the held-out splits, where evaluation scores by them; train is text and label.
    parts = {
        name: part[["text", "label", *([] if name == "train" else [c for c in slices if c in part])]]
        for name, part in parts.items()
    }

    # The reference and the profile describe the data as it is, before resampling or augmentation.
    reference = text_descriptors(parts["train"]["text"].tolist())
    reference["label"] = parts["train"]["label"].to_numpy()
    profile = profile_texts(parts["train"]["text"], parts["train"]["label"], data.labels)

    train, class_weights, balance_added, balance_removed = _balance(parts["train"], cfg)
    augmented_added = augmented_skipped = 0
    if augment.enabled:
        existing = pd.concat([train["text"], parts["validation"]["text"], parts["test"]["text"]])
        extra = augment_rows(train, augment, data.split.seed, synonyms=synonyms, existing=existing)
        train = pd.concat([train, extra.rows], ignore_index=True)
        augmented_added, augmented_skipped = len(extra.rows), extra.skipped
    parts["train"] = train

    def total(attribute: str) -> int:
        return sum(int(getattr(c, attribute)) for c in cleaned.values())

    lineage: list[dict[str, Any]] = [
        {"role": name, "uri": uris[name], "sha256": sha, "rows": cleaned[name].rows_in}
        for name, (_, sha) in sources.items()
    ]
    new_duplicates = 0
    if new is not None:
        lineage += [{"role": s.kind, **to_jsonable(s)} for s in new.sources]
        for entry in lineage:
            entry.pop("kind", None)
        new_duplicates = new.base_duplicates_removed

    final_paths = {name: str(out_dir / f"{name}.parquet") for name in (*SPLITS, "reference")}
    final_paths["profile"] = str(out_dir / "profile.json")
    final_paths["prepared"] = str(out_dir / "prepared.json")
    everything = pd.concat([part["label"] for part in parts.values()])
    result = PreparedData(
        data_uri=data.uri,
        data_sha256=sources["train"][1],
        source_uris=dict(uris),
        source_sha256={name: sha for name, (_, sha) in sources.items()},
        source_rows={name: c.rows_in for name, c in cleaned.items() if name != NEW},
        rows_in=total("rows_in") + new_duplicates,
        blank_removed=total("blank_removed"),
        texts_changed=total("texts_changed"),
        conflicting_texts=total("conflicting_texts"),
        conflicting_removed=total("conflicting_removed"),
        exact_duplicates_removed=total("exact_duplicates_removed"),
        normalised_duplicates_removed=total("normalised_duplicates_removed"),
        leaked_removed=leaked_removed,
        balance_added=balance_added,
        balance_removed=balance_removed,
        augmented_added=augmented_added,
        augmented_skipped=augmented_skipped,
        rows_out=sum(len(part) for part in parts.values()),
        split_sizes={name: len(part) for name, part in parts.items()},
        label_counts=_counts(everything, data.labels),
        split_label_counts={name: _counts(part["label"], data.labels) for name, part in parts.items()},
        class_weights=class_weights,
        seed=data.split.seed,
        lineage=lineage,
        new_rows=new_rows,
        new_base_duplicates_removed=new_duplicates,
        replay_removed=replay_removed,
        paths=final_paths,
    )

    # Merge into an existing folder (it may be a KFP output artifact); prepared.json marks completion.
    with staged_dir(out_dir, mode="merge", last=PREPARED_JSON) as staging:
        for name, part in parts.items():
            part.astype({"text": "string", "label": "string"}).to_parquet(
                staging / f"{name}.parquet", index=False
            )
        reference.astype({"label": "string"}).to_parquet(staging / "reference.parquet", index=False)
        profile.write_json(staging / "profile.json")
        result.write_json(staging / PREPARED_JSON)
        # An old prepared.json must not vouch for the new files while they are moved in one by one.
        (out_dir / PREPARED_JSON).unlink(missing_ok=True)
    return result

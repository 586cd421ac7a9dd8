"""The retraining dataset: base data plus new labelled rows (incoming files) plus a replay share,
deduplicated, split into the `established` and `new` test sets, validated by the same contract, with
every source's content hash in the lineage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.data.load import fingerprint
from refinery.data.prepare import PreparedData, prepare_data
from refinery.data.sources import incoming_files, is_new_test_row, source_lines
from refinery.data.text import comparison_keys, key_hashes
from refinery.data.validate import validate_data
from refinery.errors import DataError
from refinery.hashing import stream_sha256


def reviews(n: int, topic: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"{topic} review number {i} says something" for i in range(n)],
            "label": [("negative", "positive")[i % 2] for i in range(n)],
        }
    )


def config(tmp_path: Path, **data: object) -> RunConfig:
    base = tmp_path / "reviews.csv"
    if not base.exists():
        reviews(200, "product").to_csv(base, index=False)
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {"uri": str(base), "labels": ["negative", "positive"], **data},
        "model": {"base": str(tmp_path / "model")},
    }
    return resolve(parse_config(tree), tmp_path)


def sha(path: Path) -> str:
    with path.open("rb") as fh:
        return stream_sha256(fh)


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """A drop folder in three formats; one hotel row repeats a base text (it must not count as new)."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    hotels = reviews(120, "hotel")
    hotels.iloc[:60].to_csv(folder / "batch-1.csv", index=False)
    hotels.iloc[60:100].to_json(folder / "batch-2.jsonl", orient="records", lines=True)
    hotels.iloc[100:].to_parquet(folder / "batch-3.parquet", index=False)
    pd.DataFrame({"text": ["Product review number 3 says something!"], "label": ["positive"]}).to_csv(
        folder / "batch-4.csv", index=False
    )
    (folder / ".partial.csv").write_text("text,label\nhalf written", encoding="utf-8")
    (folder / "notes.txt").write_text("not data", encoding="utf-8")
    return folder


def test_incoming_files_lists_data_files_of_a_folder_or_a_glob(incoming: Path) -> None:
    names = [Path(p).name for p in incoming_files(str(incoming))]
    assert names == ["batch-1.csv", "batch-2.jsonl", "batch-3.parquet", "batch-4.csv"]
    assert [Path(p).name for p in incoming_files(str(incoming / "*.csv"))] == ["batch-1.csv", "batch-4.csv"]
    with pytest.raises(DataError, match="no such file or folder"):
        incoming_files(str(incoming / "missing"))
    empty = incoming / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no data file"):
        incoming_files(str(empty))


def test_assembled_dataset_holds_base_new_rows_and_lineage(tmp_path: Path, incoming: Path) -> None:
    cfg = config(tmp_path, incoming_uri=str(incoming), new_test_fraction=0.3)
    result = prepare_data(cfg, tmp_path / "dataset")
    train = pd.read_parquet(tmp_path / "dataset" / "train.parquet")
    test = pd.read_parquet(tmp_path / "dataset" / "test.parquet")

    # Every hotel row lands on exactly one side; the repeated product text stays a base row.
    hotel_train = train[train["text"].str.startswith("hotel")]
    hotel_test = test[test["text"].str.startswith("hotel")]
    assert len(hotel_train) + len(hotel_test) == 120
    assert result.new_rows == {"train": len(hotel_train), "test": len(hotel_test)}
    assert 0.15 < len(hotel_test) / 120 < 0.45
    assert result.new_base_duplicates_removed == 1
    assert set(hotel_test.index) and (test.loc[hotel_test.index, "domain"] == "new").all()
    assert (test.loc[~test["text"].str.startswith("hotel"), "domain"] == "established").all()
    assert not set(train["text"]) & set(test["text"])

    # The lineage names every source with the SHA-256 of its bytes.
    by_uri = {entry["uri"]: entry for entry in result.lineage}
    assert by_uri[cfg.data.uri] == {
        "role": "train",
        "uri": cfg.data.uri,
        "sha256": sha(Path(cfg.data.uri)),
        "rows": 200,
    }
    for name, rows in (
        ("batch-1.csv", 60),
        ("batch-2.jsonl", 40),
        ("batch-3.parquet", 20),
        ("batch-4.csv", 1),
    ):
        entry = by_uri[str(incoming / name)]
        assert entry["role"] == "incoming" and entry["rows"] == rows
        assert entry["sha256"] == sha(incoming / name)
    assert PreparedData.read(tmp_path / "dataset").lineage == result.lineage

    removed = (
        result.blank_removed
        + result.conflicting_removed
        + result.exact_duplicates_removed
        + result.normalised_duplicates_removed
        + result.new_base_duplicates_removed
        + result.leaked_removed
        + result.replay_removed
    )
    assert result.rows_in - removed == result.rows_out == 200 + 121 - 1


def test_a_new_row_keeps_its_side_from_run_to_run(tmp_path: Path) -> None:
    texts = pd.Series([f"text {i}" for i in range(2000)])
    keys = key_hashes(comparison_keys(texts))
    first = is_new_test_row(keys, 0.3)
    assert first.equals(is_new_test_row(keys, 0.3))
    assert 0.27 < first.mean() < 0.33
    # More rows later do not move the earlier ones.
    more = key_hashes(comparison_keys(pd.concat([texts, pd.Series([f"later {i}" for i in range(500)])])))
    assert is_new_test_row(more, 0.3).iloc[:2000].reset_index(drop=True).equals(first.reset_index(drop=True))


def test_replay_share_samples_the_base_training_rows(tmp_path: Path, incoming: Path) -> None:
    full = prepare_data(config(tmp_path, incoming_uri=str(incoming)), tmp_path / "full")
    half = prepare_data(config(tmp_path, incoming_uri=str(incoming), replay_share=0.5), tmp_path / "half")
    base_train = full.split_sizes["train"] - full.new_rows["train"]
    assert half.replay_removed == base_train - round(base_train * 0.5)
    assert half.split_sizes["test"] == full.split_sizes["test"], "test rows are never sampled"
    train = pd.read_parquet(tmp_path / "half" / "train.parquet")
    kept = train[train["text"].str.startswith("product")]["label"].value_counts()
    assert len(kept) == 2 and kept.max() - kept.min() <= 1, "stratified by label"


def test_the_contract_checks_new_rows_too(tmp_path: Path, incoming: Path) -> None:
    pd.DataFrame({"text": ["a hotel with a view"], "label": ["maybe"]}).to_csv(
        incoming / "batch-5.csv", index=False
    )
    cfg = config(tmp_path, incoming_uri=str(incoming))
    report = validate_data(cfg, tmp_path / "validation")
    assert not report.success
    assert "new" in report.files
    assert any(f.check == "label_values" or "maybe" in f.describe() for f in report.failures), report.failures


def test_fingerprint_covers_incoming_files(tmp_path: Path, incoming: Path) -> None:
    cfg = config(tmp_path, incoming_uri=str(incoming))
    before = fingerprint(cfg.data, source_lines(cfg, 0))
    reviews(5, "guesthouse").to_csv(incoming / "batch-9.csv", index=False)
    assert fingerprint(cfg.data, source_lines(cfg, 0)) != before


def test_feedback_is_read_through_the_pinned_id_with_its_lineage(tmp_path: Path) -> None:
    from refinery.data.sources import feedback_watermark
    from refinery.monitoring.inference_log import InferenceLog

    cfg = config(tmp_path, feedback=True)
    log = InferenceLog(str(cfg.serving.inference_log))
    assert feedback_watermark(cfg) == 0
    empty = prepare_data(cfg, tmp_path / "before")
    assert empty.new_rows == {} and [e["role"] for e in empty.lineage] == ["train", "feedback"]

    hotels = reviews(60, "hotel")
    log.add_feedback(
        [{"text": t, "label": lab} for t, lab in zip(hotels["text"], hotels["label"], strict=True)],
        ("negative", "positive"),
        max_text_chars=2000,
    )
    through = feedback_watermark(cfg)
    # Feedback that arrives after the run pinned its id waits for the next run.
    log.add_feedback([{"text": "a late hotel review", "label": "positive"}], ("negative", "positive"), 2000)
    result = prepare_data(cfg, tmp_path / "dataset", feedback_through=through)
    assert sum(result.new_rows.values()) == 60
    entry = next(e for e in result.lineage if e["role"] == "feedback")
    assert (entry["rows"], entry["through_id"]) == (60, through)
    assert len(entry["sha256"]) == 64
    everything = pd.concat(pd.read_parquet(tmp_path / "dataset" / f"{s}.parquet") for s in ("train", "test"))
    assert "a late hotel review" not in set(everything["text"])
    # The same rows give the same hash: the run's fingerprint holds while later feedback arrives.
    assert source_lines(cfg, through) == source_lines(cfg, through)
    assert source_lines(cfg, through) != source_lines(cfg, through + 1)

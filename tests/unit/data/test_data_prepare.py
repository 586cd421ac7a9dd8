"""prepare_data: normalisation, deduplication, a seeded stratified split, the reference profile, and no
half-written output on failure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.data.prepare import PreparedData, normalise_texts, prepare_data
from refinery.errors import DataError
from refinery.monitoring.descriptors import DESCRIPTOR_COLUMNS

FILES = ["prepared.json", "reference.parquet", "test.parquet", "train.parquet", "validation.parquet"]


def run_config(tmp_path: Path, frame: pd.DataFrame, seed: int = 7, **data: object) -> RunConfig:
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {
            "uri": str(path),
            "labels": ["negative", "positive"],
            "split": {"validation_fraction": 0.15, "test_fraction": 0.2, "seed": seed},
            **data,
        },
        "model": {"base": str(tmp_path / "model")},
    }
    return resolve(parse_config(tree), tmp_path)


def read_splits(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "validation", "test")}


def test_normalise_texts() -> None:
    texts = pd.Series(["  Cafe\u0301 \t is\n\ngreat ", "a\u00a0b\u200bc", None, 42, " \t "])
    assert normalise_texts(texts).tolist() == ["Café is great", "a bc", "", "42", ""]


def test_writes_the_layout_with_a_stratified_split(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    cfg = run_config(tmp_path, demo_df)
    out = tmp_path / "dataset"
    result = prepare_data(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left"

    splits = read_splits(out)
    assert {k: len(v) for k, v in splits.items()} == result.split_sizes
    assert sum(result.split_sizes.values()) == result.rows_out == result.rows_in - result.duplicates_removed
    n = result.rows_out
    assert result.split_sizes["test"] == pytest.approx(0.2 * n, abs=1)
    assert result.split_sizes["validation"] == pytest.approx(0.15 * n, abs=2)
    overall = (demo_df.drop_duplicates("text")["label"] == "positive").mean()
    for name, part in splits.items():
        assert part.columns.tolist() == ["text", "label"]
        assert set(part["label"]) == {"negative", "positive"}
        assert (part["label"] == "positive").mean() == pytest.approx(overall, abs=0.03), name
    texts = [set(part["text"]) for part in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2]), "a text in two splits"

    reference = pd.read_parquet(out / "reference.parquet")
    assert reference.columns.tolist() == [*DESCRIPTOR_COLUMNS, "label"]
    assert len(reference) == len(splits["train"])
    assert reference["label"].tolist() == splits["train"]["label"].tolist()

    assert result.data_sha256 == hashlib.sha256((tmp_path / "reviews.csv").read_bytes()).hexdigest()
    assert PreparedData.read(out) == result
    assert (
        json.loads((out / "prepared.json").read_text())["split_label_counts"]["test"]
        == result.split_label_counts["test"]
    )


def test_deterministic_for_a_seed(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    first = read_splits_after(tmp_path / "a", demo_df, seed=3)
    second = read_splits_after(tmp_path / "b", demo_df, seed=3)
    other = read_splits_after(tmp_path / "c", demo_df, seed=4)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])
    assert not first["test"]["text"].equals(other["test"]["text"])


def read_splits_after(folder: Path, frame: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    folder.mkdir()
    prepare_data(run_config(folder, frame, seed=seed), folder / "dataset")
    return read_splits(folder / "dataset")


def test_dedupes_after_normalising_and_drops_blanks(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    base = demo_df.head(200).rename(columns={"text": "review", "label": "sentiment"})
    extra = pd.DataFrame(
        {
            "review": ["Cafe\u0301  was great", "Café was great", "  Café was great\n", "   ", None],
            "sentiment": ["positive", "positive", "negative", "negative", "positive"],
        }
    )
    frame = pd.concat([base, extra], ignore_index=True)
    cfg = run_config(tmp_path, frame, text_column="review", label_column="sentiment")
    result = prepare_data(cfg, tmp_path / "dataset", frame=frame)
    assert result.rows_in == 205
    assert result.blank_removed == 2
    assert result.duplicates_removed == 2 + int(base["review"].duplicated().sum())
    assert result.conflicting_duplicates == 1
    everything = pd.concat(read_splits(tmp_path / "dataset").values())
    assert (everything["text"] == "Café was great").sum() == 1
    assert everything.loc[everything["text"] == "Café was great", "label"].item() == "positive"
    assert everything["text"].str.contains(r"\s\s|^\s|\s$").sum() == 0


def test_replaces_an_existing_dataset(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"stale")
    result = prepare_data(run_config(tmp_path, demo_df), out)
    assert len(pd.read_parquet(out / "train.parquet")) == result.split_sizes["train"]
    assert sorted(p.name for p in out.iterdir()) == FILES


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({"text": ["a", "b"], "label": ["negative", "neutral"]}),
            r"undeclared label\(s\) \['neutral'\]",
        ),
        (
            pd.DataFrame({"body": ["a"], "label": ["negative"]}),
            r"column 'text' \(data.text_column\) is missing",
        ),
        (
            pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": ["negative"] * 5 + ["positive"]}),
            r"cannot split 6 rows",
        ),
        (pd.DataFrame({"text": [" ", ""], "label": ["negative", "positive"]}), "no rows left"),
    ],
    ids=["unknown-label", "missing-column", "too-few-to-split", "all-blank"],
)
def test_bad_input_writes_nothing(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    out = tmp_path / "dataset"
    with pytest.raises(DataError, match=message):
        prepare_data(run_config(tmp_path, frame), out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


def test_a_failure_while_writing_leaves_nothing(
    tmp_path: Path, demo_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: PreparedData, path: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(PreparedData, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_data(run_config(tmp_path, demo_df), tmp_path / "dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]

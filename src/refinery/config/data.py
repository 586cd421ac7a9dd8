"""The ``data`` section: where the labelled data is, its data contract (the validation rules) and
what preparation does to it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from refinery.config._base import _Strict


class SplitConfig(_Strict):
    """Seeded stratified train/validation/test split."""

    validation_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("validation_fraction + test_fraction must leave at least 10% for training")
        return self


Severity = Literal["error", "warning", "off"]


class Check(_Strict):
    """One rule of the data contract. ``error`` stops the run, ``warning`` is reported and the run goes
    on, ``off`` leaves the rule out of the suite."""

    severity: Severity = "error"


class ShareCheck(Check):
    """A rule each row must keep; it fails when more than ``max_share`` of the rows break it."""

    max_share: float = Field(0.0, ge=0, le=1)


class TextLengthCheck(ShareCheck):
    """Text length in characters (as read) within [min_chars, max_chars]."""

    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> TextLengthCheck:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class AlphaShareCheck(ShareCheck):
    """Letters make up at least ``min_alpha`` of each text's non-space characters: a column of
    numbers, hashes or mis-parsed bytes fails it."""

    min_alpha: float = Field(0.5, ge=0, le=1)


class MinCountCheck(Check):
    """At least ``min`` rows (overall, or per declared label)."""

    min: int = Field(1, ge=0)


class RatioCheck(Check):
    """The largest declared class has at most ``max_ratio`` times the rows of the smallest."""

    max_ratio: float = Field(10.0, ge=1)


class ValidationConfig(_Strict):
    """The data contract checked by the Great Expectations suite, one entry per rule.

    Rules that training cannot do without always stop the run: the text and label columns exist, texts
    are strings, every row has a label and every label is declared.
    """

    extra_columns: Literal["ignore", "warn", "error"] = Field(
        "warn", description="Columns other than text, label and group column: ignore, warn or error."
    )
    missing_text: ShareCheck = Field(ShareCheck(), description="Rows whose text is missing or blank.")
    text_length: TextLengthCheck = TextLengthCheck(severity="warning", min_chars=2, max_share=0.01)
    min_rows: MinCountCheck = MinCountCheck(min=100)
    min_rows_per_class: MinCountCheck = MinCountCheck(min=20)
    class_imbalance: RatioCheck = RatioCheck(severity="warning", max_ratio=10.0)
    exact_duplicates: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.2),
        description="Rows repeating an earlier row's text exactly.",
    )
    normalised_duplicates: ShareCheck = Field(
        ShareCheck(severity="warning", max_share=0.05),
        description="Rows repeating an earlier row's text once case, accents, punctuation and spacing"
        " are ignored.",
    )
    conflicting_labels: ShareCheck = Field(
        ShareCheck(severity="warning", max_share=0.0),
        description="Rows whose normalised text also occurs with another label.",
    )
    leakage: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.0),
        description="Rows of the validation or test file whose normalised text occurs in an earlier"
        " split (checked when data.validation_uri or data.test_uri is set).",
    )
    encoding_damage: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.0),
        description="Rows holding U+FFFD replacement characters or control characters.",
    )
    alphabetic: AlphaShareCheck = AlphaShareCheck(max_share=0.01)

    @model_validator(mode="before")
    @classmethod
    def _partial_rules_keep_their_defaults(cls, value: Any) -> Any:
        # `--set data.validation.text_length.severity=error` must change the severity only, not reset the
        # rule's other thresholds to the class defaults: merge a partial rule over the field's default.
        if not isinstance(value, dict):
            return value
        merged = dict(value)
        for name, given in value.items():
            info = cls.model_fields.get(name)
            if isinstance(given, dict) and info is not None and isinstance(info.default, BaseModel):
                merged[name] = {**info.default.model_dump(), **given}
        return merged


class AugmentConfig(_Strict):
    """Simple text augmentation of the training split, for small datasets."""

    enabled: bool = False
    copies: int = Field(1, ge=1, le=20, description="Augmented copies added per training row.")
    deletion_probability: float = Field(0.1, ge=0, lt=1, description="Chance to drop each word.")
    swap_probability: float = Field(
        0.1, ge=0, le=1, description="Chance, per word, to swap it with a random other word."
    )
    synonym_probability: float = Field(
        0.2, ge=0, le=1, description="Chance to replace a word that has synonyms with one of them."
    )
    synonyms: str | None = Field(
        None,
        description="Synonym file: one group of interchangeable words per line, comma-separated"
        " (# starts a comment).",
    )


class PrepareConfig(_Strict):
    """What preparation does to the validated data."""

    conflicting_labels: Literal["drop", "majority"] = Field(
        "majority",
        description="Texts seen with several labels: drop them all, or keep the majority label"
        " (dropped on a tie).",
    )
    balance: Literal["none", "class_weights", "oversample", "undersample"] = Field(
        "none",
        description="Class balance of the training split: loss weights, or resampling to the"
        " largest or smallest class.",
    )
    augment: AugmentConfig = AugmentConfig()


class DataConfig(_Strict):
    """Where the labelled data is and what it must look like."""

    uri: str = Field(
        description="Local path or fsspec URI (file://, s3://, gs://, https://) of the labelled data."
    )
    validation_uri: str | None = Field(
        None, description="A given validation split (else it is split off data.uri)."
    )
    test_uri: str | None = Field(None, description="A given test split (else it is split off data.uri).")
    retention_uri: str | None = Field(
        None,
        description="An earlier domain's labelled data (say, what the champion was trained on) both models"
        " are scored on, against catastrophic forgetting; same columns and labels as data.uri.",
    )
    incoming_uri: str | None = Field(
        None,
        description="Labelled rows a labelling tool exports (CSV, JSONL or Parquet; a file, a folder or a"
        " glob; local path or fsspec URI): new data, added to training and to the `new` test set.",
    )
    feedback: bool = Field(
        False,
        description="Add the labelled feedback the service collected (POST /feedback, stored beside"
        " serving.inference_log) as new data.",
    )
    replay_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of data.uri's training rows kept beside new labelled rows (a stratified, seeded"
        " sample); its test rows are always kept, as the `established` test set.",
    )
    new_test_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of new labelled rows held out as the `new` test set, chosen by a hash of the"
        " text so that a row stays on its side run after run.",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    encoding: str = "utf-8"
    text_column: str = "text"
    label_column: str = "label"
    group_column: str | None = Field(
        None, description="Rows sharing a value here (an author, a product) never straddle splits."
    )
    labels: tuple[str, ...] = Field(description="The declared label set, in class-index order.")
    slice_columns: tuple[str, ...] = Field(
        (),
        description="Columns (a product category, a language) the evaluation scores each value of and"
        " the gate checks slice by slice; kept in the prepared validation and test splits.",
    )
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    prepare: PrepareConfig = PrepareConfig()

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        # Labels are compared as strings everywhere: YAML `[0, 1]` and CSV `0,1` must agree.
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value

    @field_validator("labels")
    @classmethod
    def _at_least_two_distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("needs at least two distinct labels")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataConfig:
        named = [
            c for c in (self.text_column, self.label_column, self.group_column, *self.slice_columns) if c
        ]
        if len(set(named)) != len(named):
            raise ValueError(
                "text_column, label_column, group_column and slice_columns must be different columns"
            )
        return self

    def split_uris(self) -> dict[str, str]:
        """The files the data comes from, by split: ``train`` always, ``validation``/``test`` when given."""
        given = {"train": self.uri, "validation": self.validation_uri, "test": self.test_uri}
        return {name: uri for name, uri in given.items() if uri}

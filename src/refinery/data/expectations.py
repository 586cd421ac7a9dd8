"""Expectations the data contract needs that Great Expectations does not ship.

Importing this module imports Great Expectations (seconds): validation imports it when it builds the
suite, never at start-up. A subclass of a GX expectation base class registers itself by its snake-case
name, so results, JSON and Data Docs show it like a built-in one.
"""

from __future__ import annotations

from typing import Any

from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.validator.metric_configuration import MetricConfiguration


class _ClassCountExpectation(ColumnAggregateExpectation):  # type: ignore[misc]
    """Base of the expectations over the rows per declared value of a column (one value_counts pass,
    shared by every expectation on the column: GX computes a metric once per validation)."""

    value_set: list[str]
    metric_dependencies = ("column.value_counts",)

    def get_validation_dependencies(
        self, execution_engine: Any = None, runtime_configuration: Any = None
    ) -> Any:
        # column.value_counts needs its sort and collate arguments, which the base class cannot know.
        deps = super().get_validation_dependencies(execution_engine, runtime_configuration)
        deps.set_metric_configuration(
            "column.value_counts",
            MetricConfiguration(
                "column.value_counts",
                metric_domain_kwargs=self.configuration.get_domain_kwargs(),
                metric_value_kwargs={"sort": "value", "collate": None},
            ),
        )
        return deps

    def _per_class(self, metrics: dict[str, Any]) -> dict[str, int]:
        counts = {str(k): int(v) for k, v in metrics["column.value_counts"].items()}
        return {value: counts.get(value, 0) for value in self.value_set}


class ExpectColumnClassCountsToBeAtLeast(_ClassCountExpectation):
    """Every value of ``value_set`` occurs in at least ``min_count`` rows.

    The observed value maps each value below the minimum to its row count; ``details.counts`` holds
    the rows of every declared value.
    """

    min_count: int
    success_keys = ("value_set", "min_count")
    args_keys = ("column", "value_set", "min_count")

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: Any = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        per_class = self._per_class(metrics)
        short = {value: n for value, n in per_class.items() if n < self.min_count}
        return {"success": not short, "result": {"observed_value": short, "details": {"counts": per_class}}}


class ExpectColumnClassImbalanceRatioToBeAtMost(_ClassCountExpectation):
    """The most frequent value of ``value_set`` has at most ``max_ratio`` times the rows of the rarest.

    A declared value with no rows fails it, with no observed ratio (``None``: JSON has no infinity).
    Values outside ``value_set`` are ignored (another expectation reports them). ``details.counts``
    holds the rows per declared value.
    """

    max_ratio: float
    success_keys = ("value_set", "max_ratio")
    args_keys = ("column", "value_set", "max_ratio")

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: Any = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        per_class = self._per_class(metrics)
        low, high = min(per_class.values()), max(per_class.values())
        ratio = high / low if low else None
        return {
            "success": ratio is not None and ratio <= self.max_ratio,
            "result": {"observed_value": ratio, "details": {"counts": per_class}},
        }

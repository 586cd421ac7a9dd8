"""Expectations the data contract needs that Great Expectations does not ship.

Importing this module imports Great Expectations (seconds): validation imports it when it builds the
suite, never at start-up. A subclass of a GX expectation base class registers itself by its snake-case
name, so results, JSON and Data Docs show it like a built-in one.
"""

from __future__ import annotations

from typing import Any

from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.validator.metric_configuration import MetricConfiguration


class ExpectColumnClassImbalanceRatioToBeAtMost(ColumnAggregateExpectation):  # type: ignore[misc]
    """The most frequent value of ``value_set`` has at most ``max_ratio`` times the rows of the rarest.

    A declared value with no rows fails it, with no observed ratio (``None``: JSON has no infinity). Values outside ``value_set`` are ignored
    (another expectation reports them). The observed value is the ratio; ``details.counts`` holds the
    rows per declared value.
    """

    value_set: list[str]
    max_ratio: float
    metric_dependencies = ("column.value_counts",)
    success_keys = ("value_set", "max_ratio")
    args_keys = ("column", "value_set", "max_ratio")

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

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: Any = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        counts = {str(k): int(v) for k, v in metrics["column.value_counts"].items()}
        per_class = [counts.get(v, 0) for v in self.value_set]
        ratio = max(per_class) / min(per_class) if min(per_class) else None
        return {
            "success": ratio is not None and ratio <= self.max_ratio,
            "result": {
                "observed_value": ratio,
                "details": {"counts": dict(zip(self.value_set, per_class, strict=True))},
            },
        }

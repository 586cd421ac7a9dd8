"""The loop summary's table: each version beside the champion it replaced, per test domain, and each
monitor decision with the signals that fired."""

from __future__ import annotations

from refinery.monitoring.story import DecisionRow, LoopStory, VersionRow


def test_table_shows_each_version_against_the_champion_it_replaced() -> None:
    story = LoopStory(
        "review-sentiment",
        versions=[
            VersionRow("1", None, 0, {"all": 0.938}, {}, promoted=True, gate="passed"),
            VersionRow(
                "2",
                "1",
                540,
                {"all": 0.95, "established": 0.931, "new": 0.973},
                {"all": 0.924, "established": 0.938, "new": 0.908},
                promoted=True,
                gate="passed",
            ),
        ],
        decisions=[
            DecisionRow("t1", "1", 400, "fired", ["embedding 0.981 (threshold 0.550)"]),
            DecisionRow("t2", "2", 320, "no_drift", []),
        ],
    )
    lines = story.to_text().splitlines()
    v1 = next(line for line in lines if line.strip().startswith("v1 "))
    v2 = next(line for line in lines if line.strip().startswith("v2 "))
    # v1 was tested on the established rows alone; v2 on both, beside v1's scores on the same rows.
    assert v1.split()[1:4] == ["0", "0.938", "-"]
    assert "0.931 (0.938)" in v2 and "0.973 (0.908)" in v2 and " 540 " in v2
    assert any("fired" in line and "embedding 0.981" in line for line in lines)
    assert any(line.split()[:3] == ["v2", "320", "no_drift"] and line.endswith("none") for line in lines)

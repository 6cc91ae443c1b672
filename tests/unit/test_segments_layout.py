"""The segment layout of a large SFTP upload (issue #15): deterministic, complete, named per segment."""

from __future__ import annotations

import itertools

import pytest

from airflow_secure_transfer.security.paths import check_name
from airflow_secure_transfer.transfer import segments

MiB = 1024 * 1024
PART = "/in/.big.bin.0123456789abcdef.part"


@pytest.mark.parametrize(
    ("size", "connections", "count"),
    [(256 * MiB, 4, 4), (256 * MiB, 8, 8), (64 * MiB, 4, 4), (64 * MiB + 1, 64, 4), (10 * 1024 * MiB, 64, 16)],
)
def test_segments_cover_the_file_in_order(size: int, connections: int, count: int) -> None:
    layout = segments.layout(size, connections, PART)
    assert len(layout) == count
    assert [s.index for s in layout] == list(range(count)) and {s.count for s in layout} == {count}
    assert layout[0].start == 0 and sum(s.length for s in layout) == size
    assert all(a.start + a.length == b.start for a, b in itertools.pairwise(layout))
    assert all(s.length > 0 for s in layout)
    # Segment 1 carries the lead its (already open) connection gets; the others are equal but the last.
    assert layout[0].length >= layout[1].length
    assert len({s.length for s in layout[1:-1]}) <= 1
    assert segments.layout(size, connections, PART) == layout  # a retry finds the same names


def test_one_connection_or_a_small_file_is_not_split() -> None:
    assert segments.layout(256 * MiB, 1, PART) == []
    assert segments.layout(segments.MIN_SEGMENT, 4, PART) == []


def test_names_are_hidden_partials_beside_the_file() -> None:
    layout = segments.layout(256 * MiB, 4, PART)
    assert [s.path for s in layout] == [f"/in/.big.bin.0123456789abcdef.seg{i}of4.part" for i in range(1, 5)]
    assert segments.assembly_path(PART, 4) == "/in/.big.bin.0123456789abcdef.4seg.part"
    for s in layout:
        check_name(s.path)

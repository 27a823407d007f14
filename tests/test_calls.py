"""One call per pair (pair_calls.tsv) from a paired-end sample's read_calls.tsv."""

import pytest

from virnucflow.calls import READ_CALLS_HEADER, pair_call, write_pair_calls
from virnucflow.errors import InputError


def read_calls(path, rows):
    """A read_calls.tsv of (read_id, call) rows; the other columns as predict writes them."""
    path.write_text(READ_CALLS_HEADER + "".join(f"{rid}\t500\t0.0000\t1\t1\t0\t0.5\t{call}\n" for rid, call in rows))
    return path


@pytest.mark.parametrize("r1, r2, call", [
    ("virus", "others", "virus"), ("others", "virus", "virus"), ("ambiguous", "virus", "virus"),
    ("others", "no_frames", "others"), ("ambiguous", "others", "others"), ("no_frames", "ambiguous", "no_frames"),
    ("ambiguous", "no_frames", "ambiguous"), ("not_scored", "not_scored", "not_scored"),
])
def test_a_pair_is_virus_when_either_mate_is_else_others_when_either_is_else_r1s_call(r1, r2, call):
    assert pair_call(r1, r2) == call


def test_pair_calls_follow_r1_order_with_both_mates_calls(tmp_path):
    mates = [("a", "virus", "others"), ("b", "others", "ambiguous"), ("c", "no_frames", "no_frames")]
    rows = [(f"{p}/1", c1) for p, c1, _ in mates] + [(f"{p}/2", c2) for p, _, c2 in mates]
    assert write_pair_calls(read_calls(tmp_path / "r.tsv", rows), tmp_path / "pairs.tsv") == 3
    assert (tmp_path / "pairs.tsv").read_text().splitlines() == [
        "pair_id\tr1_call\tr2_call\tcall", "a\tvirus\tothers\tvirus", "b\tothers\tambiguous\tothers",
        "c\tno_frames\tno_frames\tno_frames"]


@pytest.mark.parametrize("rows, message", [
    ([("a/1", "virus"), ("b/1", "virus"), ("a/2", "others")], r"r.tsv: 3 reads, an odd number"),
    ([("a/1", "virus"), ("b/1", "virus"), ("b/2", "others"), ("a/2", "others")],
     r"r.tsv, line 4: b/2 is not the R2 mate of a/1 \(line 2\)"),
    ([("a", "virus"), ("a", "virus")], r"r.tsv, line 3: a is not the R2 mate of a \(line 2\)"),
])
def test_read_calls_that_are_not_a_paired_samples_are_one_line_and_leave_nothing(tmp_path, rows, message):
    with pytest.raises(InputError, match=message) as error:
        write_pair_calls(read_calls(tmp_path / "r.tsv", rows), tmp_path / "pairs.tsv")
    assert "\n" not in str(error.value) and "rerun its prepare and calls" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tsv"]

"""The reads called virus, out of the workflow: virus_reads.fa.gz per sample (the input's records, in input
order) and virus_reads.tsv over all samples, both streamed alongside read_calls.tsv."""

import gzip
import itertools

import pytest

from virnucflow.errors import InputError
from virnucflow.virus_reads import TABLE_COLUMNS, virus_records, write_virus_reads, write_virus_table

HEADER = "read_id\tlength\tambiguous_fraction\tchunks\tchunks_with_frames\tvirus_chunks\tmax_virus_score\tcall\n"


def write_calls(path, calls):
    """A read_calls.tsv: `calls` = [(read_id, call)], the other columns made up from the position."""
    with open(path, "w") as handle:
        handle.write(HEADER)
        for i, (read_id, call) in enumerate(calls):
            score = "" if call == "no_frames" else f"0.{i + 1:02d}"
            handle.write(f"{read_id}\t{100 + i}\t0.0{i % 10}00\t2\t{1 + i % 2}\t{int(call == 'virus')}\t{score}\t{call}\n")
    return path


CALLS = [("r1", "virus"), ("r2", "others"), ("r3", "no_frames"), ("r4", "virus"), ("r5", "ambiguous"),
         ("r6", "virus")]


def records(ids):
    """(read_id, header, sequence) as fasta.read_records yields them."""
    for n, read_id in enumerate(ids, 1):
        yield read_id.encode(), f"{read_id} sample=x note=n{n}".encode(), b"ACGT" * n


def test_the_virus_reads_of_read_calls_with_their_header_lines_in_input_order(tmp_path):
    write_calls(tmp_path / "calls.tsv", CALLS)
    got = list(virus_records(tmp_path / "calls.tsv", records([r for r, _ in CALLS])))
    assert got == [(b"r1 sample=x note=n1", b"ACGT"), (b"r4 sample=x note=n4", b"ACGT" * 4),
                   (b"r6 sample=x note=n6", b"ACGT" * 6)]


def test_virus_reads_fa_gz_from_fasta_and_fastq_inputs(tmp_path):
    """Wrapped FASTA in gzip and FASTQ give the same file: each virus read's whole header line and its
    sequence on one line, nothing else; and the same bytes twice (no name or time in the gzip header)."""
    write_calls(tmp_path / "calls.tsv", CALLS)
    with gzip.open(tmp_path / "reads.fa.gz", "wt") as handle:
        for n, (read_id, _) in enumerate(CALLS, 1):
            handle.write(f">{read_id} some description {n}\n" + "\n".join(["ACGTACGTAC", "GGTTN"[: n % 5 + 1]]) + "\n")
    with open(tmp_path / "reads.fq", "w") as handle:
        for n, (read_id, _) in enumerate(CALLS, 1):
            seq = "ACGTACGTAC" + "GGTTN"[: n % 5 + 1]
            handle.write(f"@{read_id} some description {n}\n{seq}\n+\n{'I' * len(seq)}\n")
    expected = b"".join(b">%s some description %d\nACGTACGTAC%s\n" % (r.encode(), n, b"GGTTN"[: n % 5 + 1])
                        for n, (r, call) in enumerate(CALLS, 1) if call == "virus")
    for reads in ("reads.fa.gz", "reads.fq"):
        out = tmp_path / f"{reads}.virus.fa.gz"
        counts = write_virus_reads(tmp_path / "calls.tsv", [str(tmp_path / reads)], out)
        assert gzip.decompress(out.read_bytes()) == expected
        assert counts == {"reads": 6, "virus": 3}
    first = (tmp_path / "reads.fa.gz.virus.fa.gz").read_bytes()
    assert (tmp_path / "reads.fq.virus.fa.gz").read_bytes() == first
    write_virus_reads(tmp_path / "calls.tsv", tmp_path / "reads.fa.gz", tmp_path / "again.fa.gz")  # a plain path
    assert (tmp_path / "again.fa.gz").read_bytes() == first


def test_paired_end_reads_each_mate_by_its_own_call(tmp_path):
    for mate in (1, 2):
        (tmp_path / f"R{mate}.fq").write_text("".join(f"@p{n}/{mate} run=7\n{'ACGT' * n}\n+\n{'I' * 4 * n}\n"
                                                      for n in (1, 2, 3)))
    calls = [("p1/1", "virus"), ("p2/1", "others"), ("p3/1", "others"), ("p1/2", "others"), ("p2/2", "virus"),
             ("p3/2", "no_frames")]
    write_calls(tmp_path / "calls.tsv", calls)
    write_virus_reads(tmp_path / "calls.tsv", [tmp_path / "R1.fq", tmp_path / "R2.fq"], tmp_path / "v.fa.gz")
    assert gzip.decompress((tmp_path / "v.fa.gz").read_bytes()) == b">p1/1 run=7\nACGT\n>p2/2 run=7\nACGTACGT\n"


@pytest.mark.parametrize("ids, message", [
    (["r1", "r2", "rX", "r4", "r5", "r6"], r"calls.tsv, line 4: read 'r3', but record 3 of .*reads.fa is 'rX'; "
                                           r"read_calls.tsv was made from other reads: rerun"),
    (["r1", "r2", "r3", "r4", "r5", "r6", "r7"], r"reads.fa: record 7 \('r7'\) has no row in .*calls.tsv, which ends "
                                                 r"after 6 reads"),
    (["r1", "r2", "r3", "r4", "r5"], r"calls.tsv, line 7: read 'r6' is not in .*reads.fa, which ends after 5 records"),
])
def test_reads_that_do_not_match_read_calls_fail_in_one_line_and_leave_no_file(tmp_path, ids, message):
    write_calls(tmp_path / "calls.tsv", CALLS)
    (tmp_path / "reads.fa").write_text("".join(f">{r}\nACGT\n" for r in ids))
    with pytest.raises(InputError, match=message) as error:
        write_virus_reads(tmp_path / "calls.tsv", [tmp_path / "reads.fa"], tmp_path / "v.fa.gz")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.tsv", "reads.fa"]


def test_reads_are_streamed_one_at_a_time_not_gathered(tmp_path):
    """Memory flat in the number of reads: the first virus read comes out once its own record has been
    read, and later records are read only as the output is consumed."""
    calls = [(f"r{i}", "virus" if i % 1000 == 999 else "others") for i in range(5000)]
    write_calls(tmp_path / "calls.tsv", calls)
    pulled = []

    def reads():
        for item in records(r for r, _ in calls):
            pulled.append(item[0])
            yield item

    virus = virus_records(tmp_path / "calls.tsv", reads())
    assert next(virus)[0].startswith(b"r999 ") and len(pulled) == 1000
    assert next(virus)[0].startswith(b"r1999 ") and len(pulled) == 2000
    assert len(list(virus)) == 3 and len(pulled) == 5000


def test_a_file_that_is_not_read_calls_is_an_input_error(tmp_path):
    (tmp_path / "calls.tsv").write_text("read_id\tscore\nr1\t0.5\n")
    with pytest.raises(InputError, match=r"calls.tsv: not a read_calls.tsv \(no column call\); rerun calls"):
        list(virus_records(tmp_path / "calls.tsv", records(["r1"])))


def test_virus_reads_tsv_holds_every_samples_virus_reads_in_order(tmp_path):
    write_calls(tmp_path / "a.tsv", CALLS)
    write_calls(tmp_path / "b.tsv", [("x1", "others"), ("x2", "virus")])
    write_calls(tmp_path / "c.tsv", [])
    assert write_virus_table(["a", "b", "c"], [tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"],
                             tmp_path / "virus_reads.tsv") == 4
    lines = (tmp_path / "virus_reads.tsv").read_text().splitlines()
    assert lines[0].split("\t") == list(TABLE_COLUMNS) == ["sample", "read_id", "length", "max_virus_score",
                                                            "virus_chunks", "chunks_with_frames", "ambiguous_fraction"]
    assert lines[1:] == ["a\tr1\t100\t0.01\t1\t1\t0.0000", "a\tr4\t103\t0.04\t1\t2\t0.0300",
                         "a\tr6\t105\t0.06\t1\t2\t0.0500", "b\tx2\t101\t0.02\t1\t2\t0.0100"]
    with pytest.raises(ValueError, match="2 read_calls files for 3 samples"):
        write_virus_table(["a", "b", "c"], [tmp_path / "a.tsv", tmp_path / "b.tsv"], tmp_path / "t.tsv")


def test_an_endless_input_is_not_read_past_read_calls(tmp_path):
    write_calls(tmp_path / "calls.tsv", CALLS)
    endless = records(f"r{n}" for n in itertools.count(1))
    with pytest.raises(InputError, match="record 7 .'r7'. has no row"):
        list(virus_records(tmp_path / "calls.tsv", endless))

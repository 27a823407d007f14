"""Reading FASTA and FASTQ: records as Biopython (VirNucPro's reader) sees them, the same reads whatever the
format, mates with distinct ids, and one clear error per bad input."""

import gzip
import os
import random

import pytest

from helpers import read_fasta
from virnucflow.errors import InputError
from virnucflow.fasta import check_reads_start, read_batches, read_records


def write(tmp_path, name, content):
    path = tmp_path / name
    if name.endswith(".gz"):
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def records(path, **kwargs):
    out = []
    for batch in read_batches(path, **kwargs):
        text, at = batch.sequence.decode(), 0
        for read_id, length in zip(batch.ids, batch.lengths.tolist()):
            out.append((read_id.decode(), text[at : at + length]))
            at += length
    return out


def test_ids_are_the_first_word_and_sequences_keep_their_case(tmp_path):
    path = write(tmp_path, "a.fa", b">r1 some description\nACGTacgt\nNNRY\n>r2\tdesc\nGG\n>  r3 x\nTT\n")
    assert list(read_fasta(path)) == [("r1", "ACGTacgtNNRY"), ("r2", "GG"), ("r3", "TT")]


def test_windows_line_ends_blank_lines_and_spaces_are_dropped_as_biopython_does(tmp_path):
    path = write(tmp_path, "crlf.fa", b"\n>r1 d\r\nAC GT\r\n\r\nAC\t\r\n>r2\r\nGG\r\n")
    assert list(read_fasta(path)) == [("r1", "ACGTAC"), ("r2", "GG")]


def test_gzip_and_multi_member_gzip(tmp_path):
    path = tmp_path / "multi.fa.gz"
    path.write_bytes(gzip.compress(b">a\nAC\n") + gzip.compress(b">b\nGG\n"))
    assert list(read_fasta(path)) == [("a", "AC"), ("b", "GG")]


def test_batches_split_anywhere_give_the_same_records(tmp_path):
    rng = random.Random(1)
    expected = [(f"read{i}", "".join(rng.choice("ACGTNacgt") for _ in range(rng.randint(1, 1500))))
                for i in range(150)]
    text = "".join(f">{i} d\n" + "\n".join(s[j : j + 70] for j in range(0, len(s), 70)) + "\n" for i, s in expected)
    for name in ("r.fa", "r.fa.gz"):
        path = write(tmp_path, name, text.encode())
        for block in (1, 7, 64, 1000, 1 << 22):  # records longer than a block, '\n' | '>' on block edges
            batches = list(read_batches(path, block_bytes=block))
            assert records(path, block_bytes=block) == expected, (name, block)
            assert [b.first for b in batches] == [1] + [sum(len(b.ids) for b in batches[:i]) + 1
                                                        for i in range(1, len(batches))]


def test_no_index_file_is_left_beside_the_input(tmp_path):
    path = write(tmp_path, "a.fa.gz", b">r1\nACGT\n")
    list(read_fasta(path))
    assert os.listdir(tmp_path) == ["a.fa.gz"]


BAD = {
    # name: (file content, words the message must hold)
    "empty": (b"", ["file is empty"]),
    "only_blank_lines": (b"\n \n\n", ["file is empty"]),
    "text_without_header": (b"ACGTACGT\nACGT\n", ["not FASTA or FASTQ", "'>' or '@'"]),
    "binary": (bytes(range(256)) * 8, ["not FASTA", "binary"]),
    "no_sequence_middle": (b">r1\nACGT\n>r2 empty\n>r3\nACGT\n", ["record 2 ('r2') has no sequence"]),
    "no_sequence_last": (b">r1\nACGT\n>r2", ["record 2 ('r2') has no sequence"]),
    "no_id": (b">r1\nACGT\n>\nACGT\n", ["record 2 has no id"]),
    "duplicate": (b">r1\nACGT\n>r2\nACGT\n>r1 again\nACGT\n", ["records 1 and 3 have the same id 'r1'"]),
    "not_iupac": (b">r1\nACGT\n>r2\nACGJT\n", ["record 2 ('r2'): character 'J' at position 4", "IUPAC"]),
    "not_iupac_second_line": (b">r1\n" + b"A" * 60 + b"\nAC-GT\n", ["record 1 ('r1'): character '-' at position 63"]),
    "digit": (b">r1\nAC1\n", ["record 1 ('r1'): character '1' at position 3"]),
    "non_ascii": (">r1\nACµGT\n".encode(), ["record 1 ('r1'): byte 0xc2 at position 3"]),
    "nul_byte": (b">r1\nACGT\n>r2\nAC\0\0GT\n", ["record 2 contains NUL bytes"]),
    "header_not_utf8": (b">r1\xff\nACGT\n", ["record 1", "not UTF-8"]),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("suffix", [".fa", ".fa.gz"])
def test_bad_input_is_one_error_naming_file_and_record(tmp_path, case, suffix):
    content, words = BAD[case]
    path = write(tmp_path, case + suffix, content)
    with pytest.raises(InputError) as error:
        list(read_fasta(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))
    for word in words:
        assert word in message


def test_duplicates_are_found_across_batches_and_named_by_both_records(tmp_path):
    text = b"".join(b">r%d\nACGT\n" % i for i in range(1, 2001)) + b">r1500 again\nGG\n"
    path = write(tmp_path, "dup.fa", text)
    with pytest.raises(InputError, match="records 1500 and 2001 have the same id 'r1500'"):
        list(read_batches(path, block_bytes=100))


def test_damaged_gzip_is_an_error_not_a_short_read(tmp_path):
    data = gzip.compress(b"".join(b">r%d\n%s\n" % (i, b"ACGT" * 100) for i in range(2000)))
    cases = {"truncated": data[: len(data) // 2], "corrupt": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
             "trailing_junk": data + b"junk", "garbage": b"\x1f\x8b\x08\x00garbage"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.fa.gz"
        path.write_bytes(content)
        with pytest.raises(InputError, match=r"damaged gzip data .*truncated or corrupt"):
            list(read_fasta(path))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="nope.fa: file not found"):
        list(read_fasta(tmp_path / "nope.fa"))
    with pytest.raises(InputError, match="is a folder"):
        list(read_fasta(tmp_path))


def test_the_check_at_workflow_start_names_a_folder_as_a_folder(tmp_path):
    """What preflight calls for every sample: a folder (also one named like a FASTA file, also through a
    link) is 'is a folder', never 'file not found'."""
    folder = tmp_path / "reads.fa.gz"
    folder.mkdir()
    (tmp_path / "link.fa").symlink_to(folder)
    for path in (folder, tmp_path / "link.fa", f"{folder}/"):
        with pytest.raises(InputError) as error:
            check_reads_start(path)
        assert str(error.value) == (f"{path}: is a folder, not a reads file; point the sample sheet at the reads "
                                    "file")
    with pytest.raises(InputError, match="nope.fa: file not found"):
        check_reads_start(tmp_path / "nope.fa")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file, so permissions cannot be tested")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "a.fa", b">r1\nACGT\n")
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        list(read_fasta(path))


# --- FASTQ ---------------------------------------------------------------------------------------

def fastq(records, newline=b"\n"):
    """FASTQ text of (header, sequence) byte pairs, qualities all 'I' but the first ('@', as a header)."""
    return b"".join(b"@" + head + newline + seq + newline + b"+" + newline + b"@" + b"I" * (len(seq) - 1) + newline
                    for head, seq in records)


def fasta(records):
    return b"".join(b">" + head + b"\n" + b"\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + b"\n"
                    for head, seq in records)


def some_reads(n=150, seed=1):
    rng = random.Random(seed)
    sequences = ["".join(rng.choice("ACGTNacgtRY") for _ in range(rng.randint(1, 900))) for _ in range(n)]
    return [(b"read%d desc %d" % (i, i), seq.encode()) for i, seq in enumerate(sequences, start=1)]


def concatenated(path, **kwargs):
    """Every batch field but the text size, joined over the batches: what prepare consumes."""
    batches = list(read_batches(path, **kwargs))
    if not isinstance(path, list):  # record numbers (errors name them) count the file's records
        assert [b.first for b in batches] == [1] + [sum(len(b.ids) for b in batches[:i]) + 1
                                                    for i in range(1, len(batches))]
    return ([i for b in batches for i in b.ids], b"".join(b.sequence for b in batches),
            [n for b in batches for n in b.lengths.tolist()])


def test_fastq_gives_the_same_reads_as_the_fasta_of_the_same_reads(tmp_path):
    reads = some_reads()
    expected = concatenated(write(tmp_path, "r.fa", fasta(reads)))
    assert expected[0][:2] == [b"read1", b"read2"]
    variants = {"r.fq": fastq(reads), "r.fq.gz": fastq(reads), "crlf.fq": fastq(reads, b"\r\n"),
                "crlf.fq.gz": fastq(reads, b"\r\n"),
                "blank_lines_around.fq": b"\n \r\n" + fastq(reads) + b"\n\r\n \n\n\n"}
    for name, text in variants.items():
        path = write(tmp_path, name, text)
        for block in (1, 7, 64, 1000, 1 << 22):  # records longer than a block, '@' opening quality lines
            assert concatenated(path, block_bytes=block) == expected, (name, block)


def test_the_format_is_told_by_content_not_by_the_file_name(tmp_path):
    path = write(tmp_path, "reads.fa", b"@r1 x\nACGT\n+\nIIII\n")
    assert list(read_fasta(path)) == [("r1", "ACGT")]
    path = write(tmp_path, "reads.fastq.gz", b">r1 x\nACGT\n")
    assert list(read_fasta(path)) == [("r1", "ACGT")]


BAD_FASTQ = {
    # name: (file content, words the message must hold); record 1 is always good
    "third_line_not_plus": (b"@r2\nACGT\nIIII\n@r3\nAC\n+\nII\n", ["record 2 ('r2'): its third line does not start "
                                                                     "with '+'", "four lines"]),
    "wrapped": (b"@r2\nACGT\nACGT\n+\nIIIIIIII\n", ["record 2 ('r2'): its third line does not start with '+'",
                                                    "seqkit seq -w 0"]),
    "short_quality": (b"@r2\nACGT\n+\nIII\n@r3\nAC\n+\nII\n", ["record 2 ('r2'): 3 quality values for 4 bases"]),
    "long_quality": (b"@r2\nACGT\n+\nIIIII\n", ["record 2 ('r2'): 5 quality values for 4 bases"]),
    "ends_after_header": (b"@r2 x\n", ["record 2 is incomplete: the file ends after its header", "truncated"]),
    "ends_after_sequence": (b"@r2\nACGT", ["record 2 is incomplete: the file ends after its sequence line"]),
    "ends_after_plus": (b"@r2\nACGT\n+\n", ["record 2 is incomplete: the file ends after its '+' line"]),
    "ends_after_quality_without_plus": (b"@r2\nACGT\nIIII\n", ["record 2 ('r2'): its third line does not start "
                                                                "with '+'"]),
    "ends_inside_quality": (b"@r2\nACGT\n+\nII", ["record 2 ('r2'): 2 quality values for 4 bases"]),
    "blank_line_between_records": (b"\n@r2\nACGT\n+\nIIII\n", ["record 2: its first line is blank instead of '@'"]),
    "missing_quality_line": (b"@r2\nACGT\n+\n@r3\nACGT\n+\nIIII\n", ["record 2 ('r2'): 3 quality values for 4 bases"]),
    "missing_quality_line_as_long_as_the_next_header": (b"@r2\nACGT\n+\n@r33\nACGT\n+\nIIII\n", [
        "record 3: its first line starts with 'ACGT' instead of '@'", "missing"]),
    "missing_lines_in_the_middle": (b"@r2\nACGT\n+\n@r33\nACGT\n+\nIIII\n@r4\nAA\n+\nII\n", [
        "record 3: its first line starts with 'ACGT' instead of '@'"]),
    "illegal_base": (b"@r2\nACGT\n+\nIIII\n@r3\nACJT\n+\nIIII\n", ["record 3 ('r3'): character 'J' at position 3"]),
    "no_id": (b"@\nACGT\n+\nIIII\n", ["record 2 has no id (nothing after '@')"]),
    "no_sequence": (b"@r2\n\n+\n\n@r3\nA\n+\nI\n", ["record 2 ('r2') has no sequence"]),
    "duplicate": (b"@r1 again\nACGT\n+\nIIII\n", ["records 1 and 2 have the same id 'r1'"]),
    "nul_byte": (b"@r2\nAC\0T\n+\nIIII\n", ["record 2 contains NUL bytes"]),
}


@pytest.mark.parametrize("case", list(BAD_FASTQ))
@pytest.mark.parametrize("suffix", [".fq", ".fq.gz"])
def test_bad_fastq_is_one_error_naming_file_and_record(tmp_path, case, suffix):
    content, words = BAD_FASTQ[case]
    path = write(tmp_path, case + suffix, b"@r1 good\nACGTACGT\n+\n@@@@IIII\n" + content)
    for block in (5, 1 << 20):  # the record is named wherever the blocks are cut
        with pytest.raises(InputError) as error:
            list(read_batches(path, block_bytes=block))
        message = str(error.value)
        assert "\n" not in message and message.startswith(str(path))
        for word in words:
            assert word in message, (block, message)


# --- paired-end and read_records -----------------------------------------------------------------

def test_mates_get_distinct_ids_r1_then_r2(tmp_path):
    """Equal ids, Casava 1.8 ids (mate in the description) and /1 /2 ids all become ID/1 and ID/2."""
    r1 = write(tmp_path, "s_R1.fq.gz", fastq([(b"a", b"ACGT"), (b"b 1:N:0:ACGT", b"GG"), (b"c/1 x", b"TT")]))
    r2 = write(tmp_path, "s_R2.fq.gz", fastq([(b"a", b"TTTT"), (b"b 2:N:0:ACGT", b"CC"), (b"c/2 x", b"AA")]))
    assert concatenated([r1, r2]) == ([b"a/1", b"b/1", b"c/1", b"a/2", b"b/2", b"c/2"], b"ACGTGGTTTTTTCCAA",
                                      [4, 2, 2, 4, 2, 2])
    assert list(read_records([r1, r2])) == [
        (b"a/1", b"a/1", b"ACGT"), (b"b/1", b"b/1 1:N:0:ACGT", b"GG"), (b"c/1", b"c/1 x", b"TT"),
        (b"a/2", b"a/2", b"TTTT"), (b"b/2", b"b/2 2:N:0:ACGT", b"CC"), (b"c/2", b"c/2 x", b"AA")]
    assert concatenated([r1]) == ([b"a", b"b", b"c/1"], b"ACGTGGTT", [4, 2, 2])  # one file: ids as they are


PAIR_PROBLEMS = {
    # name: (R1 ids, R2 ids, words the message must hold)
    "other_read": ([b"a", b"b", b"c"], [b"a", b"x", b"c"], ["R2.fq: record 2 ('x/2') is not the mate of record 2 of",
                                                            "seqkit pair"]),
    "swapped_suffixes": ([b"a/2"], [b"a/1"], ["record 1 ('a/1/2') is not the mate"]),
    "r2_longer": ([b"a"], [b"a", b"b"], ["R2.fq: record 2 has no mate", "ends after 1 records"]),
    "r2_shorter": ([b"a", b"b"], [b"a"], ["R2.fq: ends after 1 records but", "has 2"]),
    "duplicate_in_r1": ([b"a", b"b", b"a/1"], [b"a", b"b", b"a"], ["R1.fq: records 1 and 3 have the same id 'a/1'"]),
}


@pytest.mark.parametrize("case", list(PAIR_PROBLEMS))
def test_files_that_are_not_mates_are_one_error(tmp_path, case):
    ids1, ids2, words = PAIR_PROBLEMS[case]
    r1 = write(tmp_path, "R1.fq", fastq([(i, b"ACGT") for i in ids1]))
    r2 = write(tmp_path, "R2.fq", fastq([(i, b"ACGT") for i in ids2]))
    with pytest.raises(InputError) as error:
        list(read_batches([r1, r2]))
    assert "\n" not in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_a_sample_has_one_or_two_files(tmp_path):
    path = write(tmp_path, "a.fa", b">r1\nACGT\n")
    with pytest.raises(InputError, match="3 reads files given for one sample"):
        list(read_batches([path, path, path]))


def test_read_records_gives_ids_headers_and_unwrapped_sequences_in_input_order(tmp_path):
    reads = some_reads(40)
    expected = [(head.split()[0], head, seq) for head, seq in reads]
    for name, text in {"r.fa": fasta(reads), "r.fa.gz": fasta(reads), "crlf.fq": fastq(reads, b"\r\n"),
                       "r.fq.gz": fastq(reads)}.items():
        path = write(tmp_path, name, text)
        for block in (7, 1 << 20):
            assert list(read_records(path, block_bytes=block)) == expected, (name, block)
    path = write(tmp_path, "spaces.fa", b">  r1  two  words \r\nAC GT\r\nAA\r\n")
    assert list(read_records(path)) == [(b"r1", b"  r1  two  words ", b"ACGTAA")]


def test_read_records_streams(tmp_path):
    """The first records come out before the rest of the file is read (memory flat in the number of reads)."""
    path = write(tmp_path, "late.fq", fastq([(b"r%d" % i, b"ACGT" * 50) for i in range(1, 5001)]) + b"@bad\nAC\n+\nI\n")
    records = read_records(path, block_bytes=4096)
    assert next(records) == (b"r1", b"r1", b"ACGT" * 50)
    with pytest.raises(InputError, match="record 5001 .*1 quality values for 2 bases"):
        list(records)

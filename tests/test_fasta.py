"""Reading FASTA: records as Biopython (VirNucPro's reader) sees them, and one clear error per bad input."""

import gzip
import os
import random

import pytest

from helpers import read_fasta
from virnucflow.errors import InputError
from virnucflow.fasta import check_fasta_start, read_batches


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
    "fastq": (b"@r1\nACGT\n+\nIIII\n", ["FASTQ", "seqkit fq2fa"]),
    "text_without_header": (b"ACGTACGT\nACGT\n", ["not FASTA", "'>'"]),
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
            check_fasta_start(path)
        assert str(error.value) == (f"{path}: is a folder, not a FASTA file; point the sample sheet at the reads "
                                    "file")
    with pytest.raises(InputError, match="nope.fa: file not found"):
        check_fasta_start(tmp_path / "nope.fa")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file, so permissions cannot be tested")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "a.fa", b">r1\nACGT\n")
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        list(read_fasta(path))

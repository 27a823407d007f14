"""The sample sheet: {sample: [reads]} or {sample: [R1, R2]}, with the old `fasta` header still read."""

import pytest

from virnucflow.errors import InputError
from virnucflow.samples import read_sample_sheet


def sheet(tmp_path, text):
    path = tmp_path / "samples.tsv"
    path.write_text(text)
    return path


def test_reads_column_and_the_old_fasta_name_give_a_list_per_sample(tmp_path):
    for header in ("sample\treads", "sample\tfasta", "sample\treads\tnotes"):
        path = sheet(tmp_path, f"{header}\n# a comment\ns1\tdata/s1.fq.gz\ns2\tdata/s2.fa\n")
        assert read_sample_sheet(path) == {"s1": ["data/s1.fq.gz"], "s2": ["data/s2.fa"]}


def test_a_reads2_column_makes_paired_samples_r1_then_r2_and_an_empty_cell_single_end(tmp_path):
    expected = {"p1": ["d/p1_R1.fq.gz", "d/p1_R2.fq.gz"], "s1": ["d/s1.fq.gz"]}
    for text in ("sample\treads\treads2\np1\td/p1_R1.fq.gz\td/p1_R2.fq.gz\ns1\td/s1.fq.gz\t\n",
                 "sample\tfasta\tfasta2\np1\td/p1_R1.fq.gz\td/p1_R2.fq.gz\ns1\td/s1.fq.gz\n",  # a short row
                 "sample\treads\tnotes\treads2\np1\td/p1_R1.fq.gz\tgut\td/p1_R2.fq.gz\ns1\td/s1.fq.gz\tsoil\t\n"):
        assert read_sample_sheet(sheet(tmp_path, text)) == expected, text


@pytest.mark.parametrize("text, message", [
    ("sample\tpath\ns1\ta.fq\n", "the first line must be the header 'sample<TAB>reads'"),
    ("reads\tsample\na.fq\ts1\n", "the first line must be the header 'sample<TAB>reads'"),
    ("sample\treads\treads2\tfasta2\ns1\ta.fq\tb.fq\tc.fq\n", "2 columns of R2 files (reads2, fasta2); keep one"),
    ("sample\treads\treads2\ns1\ta.fq\ta.fq\n", "row 2: sample 's1' names a.fq as both R1 and R2"),
    ("sample\treads\ns1\t\n", "row 2 needs a sample name and a reads path"),
])
def test_a_bad_sheet_is_one_line_naming_the_row_and_the_fix(tmp_path, text, message):
    path = sheet(tmp_path, text)
    with pytest.raises(InputError) as error:
        read_sample_sheet(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(path)) and message in str(error.value)


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbfsample\treads\treads2\np1\td/p1_R1.fq.gz\td/p1_R2.fq.gz\ns1\td/s1.fq.gz\t\n",  # TSV with a BOM
    b"\xef\xbb\xbfsample,reads,reads2\r\np1,d/p1_R1.fq.gz,d/p1_R2.fq.gz\r\ns1,d/s1.fq.gz,\r\n,,\r\n",  # "CSV UTF-8"
    b"sample;reads;reads2\np1;d/p1_R1.fq.gz;d/p1_R2.fq.gz\ns1;d/s1.fq.gz;\n",  # CSV where the comma is a decimal mark
])
def test_a_sheet_saved_by_a_spreadsheet_as_csv_utf8_or_tsv_with_a_byte_order_mark_is_read(tmp_path, data):
    path = tmp_path / "samples.csv"
    path.write_bytes(data)
    assert read_sample_sheet(path) == {"p1": ["d/p1_R1.fq.gz", "d/p1_R2.fq.gz"], "s1": ["d/s1.fq.gz"]}


def test_a_tab_separated_sheet_keeps_commas_in_its_paths(tmp_path):
    path = sheet(tmp_path, "sample\treads\ns1\tdata/run 3, lane 1/s1.fq.gz\n")
    assert read_sample_sheet(path) == {"s1": ["data/run 3, lane 1/s1.fq.gz"]}


@pytest.mark.parametrize("data, encoding", [
    ("sample\treads\ns1\ta.fq\n".encode("utf-16"), "UTF-16 little-endian"),  # Excel's "Unicode Text"
    ("sample\treads\ns1\ta.fq\n".encode("utf-16-be").join([b"\xfe\xff", b""]), "UTF-16 big-endian"),
    ("sample\treads\ns1\ta.fq\n".encode("utf-16-le"), "UTF-16 or UTF-32 (it has NUL bytes)"),  # no BOM
])
def test_a_utf16_sheet_is_refused_in_one_line_naming_the_encoding_and_what_to_save_it_as(tmp_path, data, encoding):
    path = tmp_path / "samples.tsv"
    path.write_bytes(data)
    with pytest.raises(InputError) as error:
        read_sample_sheet(path)
    assert str(error.value) == (f"{path}: the sample sheet is {encoding}; save it as tab-separated text or as "
                                "\"CSV UTF-8\" (a spreadsheet's Save As)")


def test_a_sheet_in_another_code_page_is_refused_naming_the_byte(tmp_path):
    path = tmp_path / "samples.tsv"
    path.write_bytes("sample\treads\ns1\tdonnées/s1.fq\n".encode("cp1252"))
    with pytest.raises(InputError) as error:
        read_sample_sheet(path)
    assert "\n" not in str(error.value) and "is not UTF-8 (byte 0xe9 on line 2)" in str(error.value)

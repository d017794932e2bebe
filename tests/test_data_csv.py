"""Reading CSV files: dialects, the NumPy fast path against the csv-module path, line numbers."""

import numpy as np
import pytest

from dltrain.data import csv as csvio
from dltrain.data.csv import CsvFile
from dltrain.errors import DataError


def write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read_all(path, **options):
    table = CsvFile.open(path, **options)
    return table, table.read(numeric=table.header)


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_detected(tmp_path, delimiter):
    path = write(tmp_path, delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "2.5", "3"]) + "\n")
    table, columns = read_all(path)
    assert table.delimiter == delimiter and table.header == ["a", "b", "c"]
    np.testing.assert_array_equal(columns.matrix, [[1, 2.5, 3]])


def test_a_semicolon_file_with_commas_inside_quotes_and_decimal_commas(tmp_path):
    path = write(tmp_path, 'name;price;city\n"Smith, J.";"3,5";"Paris"\n"Doe";"4,25";"Oslo"\n')
    table = CsvFile.open(path, decimal=",")
    assert table.delimiter == ";"
    columns = table.read(numeric=["price"], text=["name", "city"])
    np.testing.assert_allclose(columns.numbers("price"), [3.5, 4.25])
    assert columns.text["name"].tolist() == ["Smith, J.", "Doe"]


def test_bom_crlf_quotes_and_trailing_blank_lines(tmp_path):
    text = '\ufeffid,comment,x\r\n1,"said ""hi"", then left",0.5\r\n2,"two\r\nlines",1.5\r\n3,plain,2.5\r\n\r\n\r\n'
    table = CsvFile.open(write(tmp_path, text))
    assert table.header == ["id", "comment", "x"]  # no BOM in the first name
    columns = table.read(numeric=["id", "x"], text=["comment"])
    assert columns.text["comment"].tolist() == ['said "hi", then left', "two\nlines", "plain"]
    np.testing.assert_array_equal(columns.numbers("x"), [0.5, 1.5, 2.5])
    assert columns.lines.tolist() == [2, 3, 5]  # the quoted line break moves the third row down


def test_the_fast_path_and_the_csv_path_agree(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(300, 4)).round(4)
    words = np.array(["red", " blue ", "NA", "", "green"])[rng.integers(0, 5, 300)]
    lines = ["a,b,c,d,colour,id"] + [
        ",".join(repr(float(v)) for v in row) + f",{word},x{index}"
        for index, (row, word) in enumerate(zip(values, words))
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    request = {"numeric": ["a", "b", "c"], "wide": ["d"], "text": ["colour"]}
    fast = CsvFile.open(path).read(**request)
    monkeypatch.setattr(CsvFile, "_parse_fast", lambda *args: None)  # every block through the csv module
    slow = CsvFile.open(path).read(**request)
    np.testing.assert_array_equal(fast.matrix, slow.matrix)
    np.testing.assert_array_equal(fast.wide["d"], slow.wide["d"])
    np.testing.assert_array_equal(fast.lines, slow.lines)
    assert fast.text["colour"].tolist() == slow.text["colour"].tolist()
    assert set(fast.text["colour"].tolist()) == {"red", "blue", "", "green"}
    np.testing.assert_array_equal(fast.matrix, values[:, :3].astype(np.float32))
    assert fast.wide["d"].dtype == np.float64


def test_small_blocks_keep_quoted_records_whole_and_count_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_CHARS", 16)
    rows = [f'{index},"note {index}\nsecond line",{index * 2}' for index in range(40)]
    path = write(tmp_path, "n,note,y\n" + "\n".join(rows) + "\n")
    columns = CsvFile.open(path).read(numeric=["n"], wide=["y"], text=["note"])
    assert columns.numbers("n").tolist() == list(range(40))
    assert columns.text["note"][7] == "note 7\nsecond line"
    assert columns.lines.tolist() == [2 + 2 * index for index in range(40)]


def test_integers_first_then_floats_in_a_later_block(tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_CHARS", 64)
    lines = ["a,b"] + [f"{index},{index}" for index in range(50)] + ["0.5,4294967296"]
    columns = CsvFile.open(write(tmp_path, "\n".join(lines))).read(numeric=["a", "b"])
    assert columns.matrix[-1].tolist() == [0.5, 4294967296.0]
    assert columns.matrix[:50, 0].tolist() == list(range(50))
    assert not columns.integral


def test_a_column_found_to_hold_text_late_is_read_again_as_text(tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_CHARS", 64)
    lines = ["code,x"] + [f"{index:05d},{index}" for index in range(60)] + ["A0001,60"]
    columns = CsvFile.open(write(tmp_path, "\n".join(lines))).read(numeric=["code", "x"])
    assert columns.kind("code") == "text" and columns.numeric_names == ["x"]
    assert columns.text["code"][:2].tolist() == ["00000", "00001"]  # the text as written, not 0 and 1


def test_a_fixed_numeric_column_with_text_names_the_cell(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n3,four\n")
    with pytest.raises(DataError, match=r"data.csv:3: column 'b' has 'four', which is not a number; a hint$"):
        CsvFile.open(path).read(numeric=["a", "b"], fixed={"b": "a hint"})


def test_missing_value_tokens_and_nan_are_missing(tmp_path):
    columns = read_all(write(tmp_path, "a,b\n1,NA\n,2\nnan,N/A\nNULL,3\n"))[1]
    assert np.isnan(columns.matrix).tolist() == [[False, True], [True, False], [True, True], [True, False]]
    text = CsvFile.open(write(tmp_path, "a\nx\n NA \nnull\n y \n", "t.csv")).read(text=["a"]).text["a"]
    assert text.tolist() == ["x", "", "", "y"]


def test_ragged_rows_name_the_line_and_both_counts(tmp_path):
    with pytest.raises(
        DataError,
        match=r"data.csv:3: row has 2 fields but the header has 3; fix the row or its "
        r"quoting \(the delimiter ',' was detected",
    ):
        read_all(write(tmp_path, "a,b,c\n1,2,3\n4,5\n"))
    # An extra field outside the columns asked for is noticed on the fast path too.
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6,7\n", "extra.csv")
    with pytest.raises(DataError, match=r"extra.csv:3: row has 4 fields but the header has 3"):
        CsvFile.open(path).read(numeric=["a"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty; a header row of column names is needed"),
        ("\n\n  \n", "the file is empty"),
        ("a,b,y\n", "the file has a header but no data rows"),
        ("a,b,y\n\n\n", "the file has a header but no data rows"),
        ("a,b,a\n1,2,3\n", r"duplicated column name 'a' \(columns 1 and 3\); give every column a distinct name"),
    ],
)
def test_empty_files_and_bad_headers(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_all(write(tmp_path, text))


def test_unnamed_columns_get_a_name(tmp_path):
    table = CsvFile.open(write(tmp_path, ",a,\n0,1,\n"))
    assert table.header == ["column_1", "a", "column_3"]


def test_text_that_is_not_utf8_names_the_line_and_suggests_the_encoding(tmp_path):
    path = write(tmp_path, "city,x\nParis,1\nZürich,2\n", encoding="latin-1")
    with pytest.raises(
        DataError,
        match=r"data.csv:3: not utf-8 text \(byte 0xfc at column 2\); save the file as "
        r"UTF-8, or set data.encoding",
    ):
        CsvFile.open(path).read(numeric=["x"], text=["city"])
    columns = CsvFile.open(path, encoding="latin-1").read(numeric=["x"], text=["city"])
    assert columns.text["city"].tolist() == ["Paris", "Zürich"]


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        CsvFile.open(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        CsvFile.open(tmp_path)
    with pytest.raises(DataError, match="unknown text encoding 'klingon'"):
        CsvFile.open(write(tmp_path, "a\n1\n"), encoding="klingon")


def test_old_mac_line_endings(tmp_path):
    columns = read_all(write(tmp_path, "a,b\r1,2\r3,4\r"))[1]
    np.testing.assert_array_equal(columns.matrix, [[1, 2], [3, 4]])


def test_text_in_the_first_rows_is_read_as_text_from_the_start(tmp_path, monkeypatch):
    """A column asked for as numbers whose first rows hold text is read as text at once, not
    found in the first block and read again; the columns are those the second read gave. Text
    found only later (past the sample) still turns the column into text."""
    colors, labels = ["red", "blue", ""], ["no", "yes"]
    lines = ["a;color;late;label"] + [
        f"{index * 0.5};{colors[index % 3]};{'n/a!' if index == 5000 else index};{labels[index % 2]}"
        for index in range(6000)
    ]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    starts = []

    class Counted(csvio.Gathered):
        def __init__(self, *args):
            starts.append(args)
            super().__init__(*args)

    monkeypatch.setattr(csvio, "Gathered", Counted)
    monkeypatch.setattr(csvio, "BLOCK_CHARS", 1 << 14)  # blocks of a few hundred rows

    def read():
        starts.clear()
        columns = CsvFile.open(path).read(numeric=["a", "color", "late"], wide=["label"])
        return columns, len(starts)

    columns, reads = read()
    assert reads == 2  # once, then again when "late" turns out to hold text at line 5002
    assert starts[0] == (["a", "late"], [], ["color", "label"])
    monkeypatch.setattr(CsvFile, "_text_at_start", lambda self, names: [])
    before, reads_before = read()
    assert reads_before == 3
    assert columns.numeric_names == before.numeric_names == ["a"]
    assert np.array_equal(columns.matrix, before.matrix) and np.array_equal(columns.lines, before.lines)
    for name in ("color", "late", "label"):
        assert np.array_equal(columns.text[name], before.text[name])

"""The fast CSV path (numba kernels over the bytes) against its oracle, the plain reader: the same
arrays bit for bit, the same line numbers, the same message for every mistake.

The fast path runs only on files of MIN_BYTES or more; these tests lower that, and the block
and chunk sizes, so that small files cross many blocks and chunks."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dltrain.commands import check
from dltrain.data import csv as csv_module
from dltrain.data import fastcsv
from dltrain.data.csv import CsvFile
from dltrain.engine import kernel_cache, kernels
from dltrain.errors import DltrainError

pytestmark = pytest.mark.skipif(not kernels.ready(), reason="numba is not installed")

PROPERTIES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def small_blocks(monkeypatch):
    """The fast path for any file, cut into blocks of a few records and chunks of a few blocks."""
    monkeypatch.setattr(fastcsv, "MIN_BYTES", 0)
    monkeypatch.setattr(fastcsv, "BLOCK_BYTES", 40)
    monkeypatch.setattr(fastcsv, "CHUNK_BYTES", 150)
    monkeypatch.setattr(fastcsv, "compile_when_cold", True)  # the kernels run, compiled here if need be


def _outcome(path, request, *, how="fast", encoding="utf-8", keep_empty=False, na_values=(), **options):
    """What reading gives, as plain values, or the error message. ``how``: "fast" (the kernels),
    "blocks" (the fast path's blocks, each parsed by the plain reader), "plain" (the plain reader)."""
    usable, needs_plain = fastcsv.usable, fastcsv._needs_plain
    calls = []
    if how == "plain":
        fastcsv.usable = lambda *args: False
    else:
        fastcsv.usable = lambda table, size: calls.append(1) or usable(table, size)
    if how == "blocks":
        fastcsv._needs_plain = lambda flags: True
    try:
        table = CsvFile.open(path, encoding=encoding, **options)
        table.keep_empty_rows = keep_empty
        table.set_na_values(na_values)
        columns = table.read(**request(table.header))
    except DltrainError as error:
        return str(error)
    finally:
        fastcsv.usable, fastcsv._needs_plain = usable, needs_plain
    assert how == "plain" or calls
    return {
        "numeric": columns.numeric_names,
        "matrix": _bits(columns.matrix),
        "dtype": str(columns.matrix.dtype),
        "wide": {name: _bits(values) for name, values in columns.wide.items()},
        "text": {name: values.tolist() for name, values in columns.text.items()},
        "lines": columns.lines.tolist(),
        "integral": columns.integral,
    }


def _bits(values: np.ndarray) -> bytes:
    """The bytes of ``values``, but for the signs of NaN and zero, which the plain reader itself
    sets one way where NumPy's parser read a block and the other where the csv module did."""
    values = values + values.dtype.type(0)  # -0.0 + 0.0 is 0.0
    values[np.isnan(values)] = np.nan
    return values.tobytes()


def _same(fast, plain):
    """Two outcomes equal, but for ``integral`` (every number an integer, so that the cache may
    store them compactly): the plain reader says False for "2.0" where NumPy parsed the block
    and True where the csv module did; the fast path says True. It must never be wrongly True."""
    if isinstance(fast, dict) and isinstance(plain, dict):
        fast, plain = dict(fast), dict(plain)
        if fast.pop("integral"):
            numbers = np.frombuffer(fast["matrix"], dtype=np.float32)
            numbers = numbers[np.isfinite(numbers)]
            assert np.array_equal(numbers, np.round(numbers))
        plain.pop("integral")
    assert fast == plain


def _both(path, request, **options):
    """The fast path's outcome, checked against the plain reader's.

    The kernels must give exactly what the plain reader gives on the same blocks. The whole
    file read by the plain reader at once gives the same arrays; where a file holds several
    mistakes, the first one reported is the first in block order, and the plain reader's blocks
    (4 MiB of text) are not the fast path's, so there only an error must meet an error."""
    fast = _outcome(path, request, **options)
    _same(fast, _outcome(path, request, how="blocks", **options))
    plain = _outcome(path, request, how="plain", **options)
    if isinstance(fast, str) or isinstance(plain, str):
        assert isinstance(fast, str) and isinstance(plain, str), (fast, plain)
        return fast
    _same(fast, plain)
    return fast


def _all_numeric(header):
    names = list(dict.fromkeys(header))
    return {"numeric": names[:-1], "wide": names[-1:]}


# ---------------------------------------------------------------- generated files

NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: f"{x:.9g}"),
    st.floats(-1e6, 1e6).map(lambda x: f"{x:.5f}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.18e}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.25g}"),
    st.sampled_from(["0", "-0", "+5", "007", ".5", "5.", "-.25e-3", "1E5", "3.4028235e38", "1e-320", "2.5e-308"]),
)
OTHER_CELLS = st.sampled_from(
    ["", " ", "NA", "nan", "-nan", "NULL", "n/a", "?", "inf", "1e400", "1e39", "red", "Zürich", "a b", "1_000"]
    + ['"1.5"', '" 2 "', '"a,b"', '"x""y"', '"two\nlines"', '"q"z', 'a"b', '""', "\x00", "1\x00", " 3 ", "\t4"]
)
CELLS = st.one_of(NUMBERS, NUMBERS, OTHER_CELLS)


@st.composite
def csv_files(draw):
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    width = draw(st.integers(1, 4))
    header = [f"c{index}" for index in range(width)]
    rows = draw(st.lists(st.lists(CELLS, min_size=width, max_size=width), min_size=1, max_size=25))
    for _ in range(draw(st.integers(0, 2))):  # a ragged row, a blank line, a row of empty cells
        extra = draw(st.sampled_from([["1"] * (width + 1), [], [""] * width, ["  "]]))
        rows.insert(draw(st.integers(0, len(rows))), extra)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join(delimiter.join(row) for row in [header] + rows)
    return draw(st.sampled_from(["", "\ufeff"])) + body + draw(st.sampled_from(["", newline, newline * 2]))


@PROPERTIES
@given(
    text=csv_files(),
    first_as_text=st.booleans(),
    keep_empty=st.booleans(),
    fixed=st.booleans(),
    na_values=st.sampled_from([(), ("?",), ("-999", "red")]),
)
@example(text="c0,c1\n1,2\n", first_as_text=False, keep_empty=False, fixed=False, na_values=())
@example(  # the last block ",": NumPy's parser kept it as a row of empty cells, where the csv module skips it
    text='c0,c1\n0,0\n0,0\n0,0\n0,0\n0,0\n0,0\n0,"a,b"\n"a,b",0\n,',
    first_as_text=False,
    keep_empty=False,
    fixed=False,
    na_values=(),
)
def test_the_fast_path_reads_any_csv_as_the_plain_reader_does(
    tmp_path, small_blocks, text, first_as_text, keep_empty, fixed, na_values
):
    path = tmp_path / "any.csv"
    path.write_bytes(text.encode("utf-8"))

    def request(header):
        names = list(dict.fromkeys(header))
        text_names = names[:1] if first_as_text and len(names) > 1 else []
        numeric = [name for name in names if name not in text_names]
        wide = numeric[-1:] if len(numeric) > 1 else []
        return {
            "numeric": [name for name in numeric if name not in wide],
            "wide": wide,
            "text": text_names,
            "fixed": {name: "it is the target" for name in wide} if fixed else None,
        }

    _both(path, request, keep_empty=keep_empty, na_values=na_values)


@PROPERTIES
@given(values=st.lists(NUMBERS, min_size=1, max_size=60), crlf=st.booleans())
def test_numbers_are_converted_exactly_as_python_does(tmp_path, small_blocks, values, crlf):
    """Each number float64 correctly rounded (then float32 for features), whatever its digits."""
    path = tmp_path / "numbers.csv"
    newline = "\r\n" if crlf else "\n"
    path.write_text(newline.join(["x,y"] + [f"{value},{value}" for value in values]) + newline, newline="")
    outcome = _both(path, _all_numeric)
    if not isinstance(outcome, str):
        expected = np.array([float(value) for value in values])
        assert np.frombuffer(outcome["wide"]["y"], dtype=np.float64).tolist() == expected.tolist()


# ---------------------------------------------------------------- what each case gives


def _write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_a_bad_cell_deep_in_a_file_is_named_with_its_line_and_column(tmp_path, small_blocks):
    rows = [f"{index},{index * 0.5},{index % 2}" for index in range(200)]
    rows[150] = "150,abc,0"
    path = _write(tmp_path, "a,b,y\n" + "\n".join(rows) + "\n")
    message = _both(path, lambda header: {"numeric": ["a", "b"], "fixed": {"b": "fix the cell"}})
    assert message == f"{path}:152: column 'b' has 'abc', which is not a number; fix the cell"


def test_a_ragged_row_and_an_unclosed_quote_give_the_plain_readers_messages(tmp_path, small_blocks):
    rows = [f"{index},{index}" for index in range(100)]
    ragged = _write(tmp_path, "a,b\n" + "\n".join(rows[:60] + ["1,2,3"] + rows[60:]) + "\n", "ragged.csv")
    assert "ragged.csv:62: row has 3 fields but the header has 2" in _both(ragged, _all_numeric)
    unclosed = _write(tmp_path, "a,b\n" + "\n".join(rows[:60] + ['1,"2'] + rows[60:]) + "\n", "unclosed.csv")
    _both(unclosed, _all_numeric)


def test_a_column_that_turns_out_to_hold_text_late_is_read_as_text(tmp_path, small_blocks):
    rows = [f"{index},{index % 3}" for index in range(300)]
    rows[280] = "280,many"
    path = _write(tmp_path, "a,b\n" + "\n".join(rows) + "\n")
    outcome = _both(path, lambda header: {"numeric": ["a", "b"]})
    assert outcome["numeric"] == ["a"] and outcome["text"]["b"][280] == "many"


def test_quoted_line_breaks_crlf_bom_and_blank_lines_keep_every_line_number(tmp_path, small_blocks):
    text = '\ufeffname,x,y\r\n"two\r\nlines",1,2\r\n\r\n"a ""b""",3.5,4\r\nplain,5,6\r\n\r\n\r\n'
    path = _write(tmp_path, text * 20)
    outcome = _both(path, lambda header: {"numeric": ["x"], "wide": ["y"], "text": ["name"]})
    assert outcome["lines"][:4] == [2, 5, 6, 9]
    assert outcome["text"]["name"][:3] == ["two\nlines", 'a "b"', "plain"]


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252", "ascii"])
def test_a_byte_that_is_not_text_in_the_encoding_names_the_line(tmp_path, small_blocks, encoding):
    rows = ["a,b"] + [f"{index},caf{'é' if encoding != 'ascii' else 'e'}" for index in range(80)]
    raw = ("\n".join(rows) + "\n").encode(encoding if encoding != "ascii" else "utf-8")
    bad = b"\x81" if encoding == "cp1252" else b"\xff"
    path = tmp_path / "data.csv"
    path.write_bytes(raw.replace(b"70,caf", b"70,c" + bad, 1))
    message = _both(path, lambda header: {"numeric": ["a"], "text": ["b"]}, encoding=encoding)
    if encoding == "latin-1":  # every byte is latin-1 text
        assert message["text"]["b"][70] == "c\xffé"
    else:
        assert ":72: not " in message and "data.encoding" in message


def test_missing_markers_and_declared_na_values(tmp_path, small_blocks):
    rows = [
        f"{index},{['', 'NA', '?', ' null ', '-999', '7'][index % 6]},{['x', '?', 'NA', 'y'][index % 4]}"
        for index in range(90)
    ]
    path = _write(tmp_path, "a,b,c\n" + "\n".join(rows) + "\n")
    outcome = _both(path, lambda header: {"numeric": ["a", "b"], "text": ["c"]}, na_values=("?", "-999"))
    values = np.frombuffer(outcome["matrix"], dtype=np.float32).reshape(-1, 2)[:, 1]
    assert np.isnan(values[:5]).all() and values[5] == 7
    assert outcome["text"]["c"][:4] == ["x", "", "", "y"]


def test_a_number_beyond_float32_and_a_nul_byte_are_named(tmp_path, small_blocks):
    rows = [f"{index},{index}.5" for index in range(100)]
    beyond = _write(tmp_path, "a,b\n" + "\n".join(rows[:70] + ["1,5e39"] + rows[70:]) + "\n", "beyond.csv")
    assert "beyond.csv:72: column 'b' has 5e+39, beyond the range of float32" in _both(beyond, _all_numeric)
    nul = _write(tmp_path, "a,b\n" + "\n".join(rows[:70] + ["1,5\x00"] + rows[70:]) + "\n", "nul.csv")
    assert "nul.csv:72: column 'b' has a NUL byte" in _both(nul, _all_numeric)


def test_rows_of_empty_cells_are_kept_for_predict_but_not_at_the_end(tmp_path, small_blocks):
    path = _write(tmp_path, "a,b\n" + "1,2\n,\n3,4\n" * 30 + ",\n,\n\n")
    outcome = _both(path, _all_numeric, keep_empty=True)
    assert len(outcome["lines"]) == 90 and outcome["lines"][-1] == 91  # the last two dropped
    assert len(_both(path, _all_numeric)["lines"]) == 60


def test_integer_files_stay_integral_and_a_fraction_does_not(tmp_path, small_blocks):
    ints = _write(tmp_path, "a,b\n" + "".join(f"{index},{index % 7}\n" for index in range(200)), "ints.csv")
    assert _outcome(ints, _all_numeric)["integral"] is True
    floats = _write(tmp_path, "a,b\n" + "".join(f"{index},{index / 4}\n" for index in range(200)), "floats.csv")
    assert _outcome(floats, _all_numeric)["integral"] is False


def test_small_files_and_unsupported_files_take_the_plain_reader(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n")
    table = CsvFile.open(path)
    assert not fastcsv.usable(table, 100)  # below MIN_BYTES: no numba import, no compilation
    assert fastcsv.usable(table, fastcsv.MIN_BYTES)
    (tmp_path / "utf16.csv").write_text("a,b\n1,2\n", encoding="utf-16")
    assert not fastcsv.usable(CsvFile.open(tmp_path / "utf16.csv", encoding="utf-16"), fastcsv.MIN_BYTES)


def test_without_numba_the_plain_reader_reads_every_file(tmp_path, small_blocks, monkeypatch):
    path = _write(tmp_path, "a,b\n" + "".join(f"{index},{index / 4}\n" for index in range(200)))
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setattr(fastcsv, "read_into", lambda *args: pytest.fail("the fast path ran"))
    columns = CsvFile.open(path).read(numeric=["a", "b"])
    assert columns.n_rows == 200 and columns.matrix[-1, 1] == 199 / 4


def test_reading_reports_its_progress_in_bytes(tmp_path, small_blocks):
    path = _write(tmp_path, "a,b\n" + "".join(f"{index},{index / 4}\n" for index in range(500)))
    seen = []

    def start(read_path, total):
        assert read_path == path and total == path.stat().st_size

        class Updates:
            def __enter__(self):
                return seen.append

            def __exit__(self, *exc):
                seen.append("closed")

        return Updates()

    with csv_module.reading_progress(start):
        CsvFile.open(path).read(numeric=["a", "b"])
    assert seen[-1] == "closed" and len(seen) > 10
    assert seen[:-1] == sorted(seen[:-1]) and seen[-2] == path.stat().st_size


def _prepared(config, fast: bool):
    """check's prepared data (features, targets, schema), or its error, read by one reader."""
    usable = fastcsv.usable
    if not fast:
        fastcsv.usable = lambda *args: False
    try:
        data = check.check(config).data
    except DltrainError as error:
        return str(error)
    finally:
        fastcsv.usable = usable
    splits = [data.train.in_memory(), data.validation.in_memory()]
    return [split.features.tobytes() for split in splits], [split.targets.tobytes() for split in splits], data.schema


def test_a_fit_prepared_from_the_fast_path_is_the_one_from_the_plain_reader(tmp_path, small_blocks):
    """Text columns come from the fast path as codes (their distinct values counted, not
    sorted); the categories, fills, one-hot inputs and messages are the plain reader's."""
    rng = np.random.default_rng(0)
    colors = np.array(["red", "green", "", "blue", " blue ", "NA", '"teal"'])
    rows = [
        f"{rng.normal():.4f},{colors[rng.integers(len(colors))]},{'' if index % 9 == 0 else rng.integers(5)},"
        f"{'yes' if index % 3 else 'no'}"
        for index in range(300)
    ]
    (tmp_path / "train.csv").write_text("x,color,n,y\n" + "\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("x,color,n,y\n1.5,red,2,yes\n0.5,mauve,1,no\n")
    config = tmp_path / "config.yaml"
    settings = "data: {train: train.csv, target: y, validation: 0.25, missing: mode, cache: false}"
    config.write_text(f"name: t\n{settings}\nmodel: {{layers: []}}\ntrain: {{epochs: 1}}\n")
    fast, plain = _prepared(config, fast=True), _prepared(config, fast=False)
    assert fast[:2] == plain[:2] and fast[2].to_dict() == plain[2].to_dict()
    assert fast[2].columns[1].categories == ["blue", "green", "red", "teal"]
    config.write_text(config.read_text().replace("cache: false", "cache: false, test: test.csv"))
    message = _prepared(config, fast=True)
    assert message == _prepared(config, fast=False)
    assert "test.csv:3: column 'color' has 'mauve', which training never saw" in message


def test_the_distinct_cells_of_a_text_column_from_codes_are_numpys(tmp_path, small_blocks):
    words = ["pear", "apple", "", "fig", "Apple", "apple "]
    path = _write(tmp_path, "a,w\n" + "".join(f"{index},{words[index * 7 % 6]}\n" for index in range(120)))
    columns = CsvFile.open(path).read(numeric=["a"], text=["w"])
    assert "w" in columns.categories  # read by the fast path, as codes
    rows = np.arange(3, 120, 5)
    for chosen in (None, rows):
        values = columns.text["w"] if chosen is None else columns.text["w"][chosen]
        expected = np.unique(values, return_inverse=True, return_counts=True)
        for got, want in zip(columns.distinct("w", chosen), expected):
            assert got.tolist() == want.reshape(-1).tolist()


# ---------------------------------------------------------------- no compile wait


@pytest.fixture
def fresh_kernels(monkeypatch):
    """The kernels as new dispatchers: nothing compiled in this process (each loads from the disk
    cache, or compiles, on its first call), and no helper started yet."""
    monkeypatch.setattr(fastcsv, "_compiled_kernels", None)
    monkeypatch.setattr(fastcsv, "_helper", kernel_cache.CompileHelper(fastcsv._HELPER))
    fastcsv._compiled()


@pytest.fixture
def cold_cache(monkeypatch):
    """A fresh install: the disk cache holds none of the kernels. Helpers started are recorded
    (not run), and compiling a kernel in this process fails the test."""
    import subprocess

    monkeypatch.setattr(fastcsv, "compile_when_cold", False)
    monkeypatch.setattr(fastcsv, "_on_disk", True)
    monkeypatch.setattr(kernel_cache, "holds", lambda kernel, signature: False)
    helpers = []

    class Helper:
        def __init__(self, command, **options):
            helpers.append(command)

        def poll(self):
            return None  # still compiling

    monkeypatch.setattr(subprocess, "Popen", Helper)
    kernels_ = fastcsv._compiled()
    for name in fastcsv._KERNEL_NAMES:

        def compile_(signature, name=name):
            raise AssertionError(f"{name} compiled while the read waits")

        monkeypatch.setattr(kernels_[name], "compile", compile_)
    return helpers


def _mixed(tmp_path):
    return _write(tmp_path, "a,b,c\n" + "".join(f'{index},"w{index % 3}",{index / 8}\n' for index in range(300)))


def _request(header):
    return {"numeric": ["a"], "wide": ["c"], "text": ["b"]}


def test_a_read_never_waits_for_the_kernels_to_compile(tmp_path, small_blocks, fresh_kernels, cold_cache):
    path = _mixed(tmp_path)
    for _ in range(2):
        _same(_outcome(path, _request), _outcome(path, _request, how="plain"))  # the plain reader's arrays
    kernels_ = fastcsv._compiled()
    assert all(not kernels_[name].signatures for name in fastcsv._KERNEL_NAMES)  # nothing compiled here
    assert cold_cache == [[sys.executable, "-c", fastcsv._HELPER]]  # one helper compiles them, once
    assert _outcome(path, lambda header: {"numeric": ["a", "b"]}) == _outcome(
        path, lambda header: {"numeric": ["a", "b"]}, how="plain"
    )  # and the same message


def test_a_big_file_compiles_the_kernels_it_lacks(tmp_path, small_blocks, fresh_kernels, cold_cache, monkeypatch):
    # Reading a big file takes longer with the plain reader than compiling the kernels does.
    monkeypatch.setattr(fastcsv, "COMPILE_PAYS_BYTES", 1000)
    path = _mixed(tmp_path)
    with pytest.raises(AssertionError, match="compiled while the read waits"):
        CsvFile.open(path).read(numeric=["a"], wide=["c"], text=["b"])
    assert not cold_cache


def test_the_cache_is_searched_for_the_kernels_a_read_calls(tmp_path, small_blocks, fresh_kernels, monkeypatch):
    # The types looked up in the cache are those a read calls the kernels with: else a fresh
    # install would read with the plain reader for ever, or compile while the data waits.
    predicted = []
    calls = fastcsv._calls
    monkeypatch.setattr(fastcsv, "_calls", lambda *args: predicted.extend(calls(*args)) or predicted)
    CsvFile.open(_mixed(tmp_path)).read(numeric=["a"], wide=["c"], text=["b"])
    kernels_ = fastcsv._compiled()
    for name, arguments in predicted:
        signature = tuple(kernels_[name].typeof_pyval(value) for value in arguments)
        assert kernels_[name].signatures == [signature], name
    assert {name for name, _ in predicted} == {"_count_newlines", "_record_cuts", "_parse_block"}


def test_the_helper_compiles_what_a_read_calls_unless_another_is_at_it(fresh_kernels, monkeypatch):
    from dltrain import system

    monkeypatch.setattr(fastcsv, "compile_when_cold", False)
    min_bytes = fastcsv.MIN_BYTES
    kernels_ = fastcsv._compiled()
    folder = kernel_cache.folder(kernels_["_parse_block"])
    if system.CAN_LOCK:
        with open(folder / fastcsv._HELPER_LOCK, "ab") as lock:
            system.lock(lock.fileno())  # another helper holds it
            fastcsv.compile_into_cache()
        assert not kernels_["_parse_block"].signatures  # left to the other helper
    fastcsv.compile_into_cache()
    for name in ("_count_newlines", "_record_cuts", "_parse_block"):
        assert len(kernels_[name].signatures) == 1, name  # each compiled (or loaded) for a read's types
    assert (fastcsv.MIN_BYTES, fastcsv.compile_when_cold) == (min_bytes, False)


def test_a_helper_still_compiling_at_exit_is_left_to_finish_in_silence():
    import signal
    import subprocess
    import warnings

    helper = kernel_cache.CompileHelper(fastcsv._HELPER)
    helper.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid = helper.process.pid
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            helper.leave()  # the last reference: subprocess would warn that it still runs
        assert helper.process is None
        assert not caught
    finally:
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already
            pass

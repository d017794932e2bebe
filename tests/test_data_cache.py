"""The parsed-data cache: hits skip parsing, any change to the file or the options misses."""

import os

import numpy as np
import pytest

from dltrain.commands import check
from dltrain.data import cache as datacache
from dltrain.data.csv import CsvFile


@pytest.fixture
def cache_everything(monkeypatch):
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    monkeypatch.delenv(datacache.CACHE_ENV, raising=False)


@pytest.fixture
def parses(monkeypatch):
    """Counts how often a CSV body is really parsed."""
    calls = []
    original = CsvFile.read

    def counting(self, *args, **kwargs):
        calls.append(self.path.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CsvFile, "read", counting)
    return calls


def make_csv(path, rows=200, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["a,b,colour,label"]
    for index in range(rows):
        lines.append(f"{rng.integers(0, 255)},{rng.normal():.4f},{['red', 'blue'][index % 2]},{index % 3}")
    path.write_text("\n".join(lines) + "\n")
    return path


REQUEST = {"numeric": ["a", "b"], "wide": ["label"], "text": ["colour"], "fixed": {}}


def entry_files(folder):
    """(the record, the folder of arrays) of the one entry in a cache folder."""
    (record,) = folder.glob("*.json")
    return record, record.with_suffix("")


@pytest.mark.parametrize("mapped", [False, True], ids=["in memory", "mapped"])
def test_a_second_read_comes_from_the_cache_and_is_identical(tmp_path, cache_everything, parses, mapped):
    path = make_csv(tmp_path / "d.csv")
    first = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    second = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache", mapped=mapped)
    assert parses == ["d.csv"]
    np.testing.assert_array_equal(first.matrix, second.matrix[np.arange(second.n_rows)])
    assert second.matrix.dtype == np.float32
    np.testing.assert_array_equal(first.wide["label"], second.wide["label"])
    assert second.text["colour"].tolist() == first.text["colour"].tolist()
    np.testing.assert_array_equal(first.lines, second.lines)
    record, arrays = entry_files(tmp_path / "cache")
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [arrays.name, record.name]
    for array in arrays.iterdir():  # plain arrays only
        assert array.suffix == ".npy" and np.load(array, allow_pickle=False).dtype != object


def test_integer_data_is_stored_compactly(tmp_path, cache_everything):
    path = tmp_path / "ints.csv"
    path.write_text("a,b\n" + "\n".join(f"{i % 256},{(i * 7) % 256}" for i in range(100)) + "\n")
    request = {"numeric": ["a", "b"]}
    datacache.read_columns(CsvFile.open(path), request, tmp_path / "cache")
    assert np.load(entry_files(tmp_path / "cache")[1] / "matrix.npy", allow_pickle=False).dtype == np.uint8
    cached = datacache.read_columns(CsvFile.open(path), request, tmp_path / "cache")
    assert cached.matrix.dtype == np.float32 and cached.matrix[:, 1].tolist() == [(i * 7) % 256 for i in range(100)]


def test_changed_content_of_the_same_size_and_time_misses(tmp_path, cache_everything, parses):
    path = make_csv(tmp_path / "d.csv")
    datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    status = path.stat()
    text = path.read_text()
    path.write_text(text.replace("red", "rod", 1))  # same size
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))  # same modification time
    columns = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    assert parses == ["d.csv", "d.csv"]
    assert columns.text["colour"][0] == "rod"


def test_other_options_use_another_entry(tmp_path, cache_everything, parses):
    path = make_csv(tmp_path / "d.csv")
    datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    datacache.read_columns(CsvFile.open(path), {**REQUEST, "numeric": ["a"]}, tmp_path / "cache")
    datacache.read_columns(CsvFile.open(path, delimiter=";"), {"text": ["a,b,colour,label"]}, tmp_path / "cache")
    assert len(parses) == 3
    datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    assert len(parses) == 3  # the first entry is still there


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete_arrays", "bad_meta"])
def test_a_damaged_entry_is_ignored_and_replaced(tmp_path, cache_everything, parses, damage):
    path = make_csv(tmp_path / "d.csv")
    expected = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    meta, folder = entry_files(tmp_path / "cache")
    arrays = folder / "matrix.npy"
    if damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:200])
    elif damage == "garbage":
        arrays.write_bytes(b"\x93NUMPY" + os.urandom(500))
    elif damage == "delete_arrays":
        arrays.unlink()
    else:
        meta.write_text("{not json")
    columns = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    np.testing.assert_array_equal(columns.matrix, expected.matrix)
    assert len(parses) == 2
    datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    assert len(parses) == 2  # replaced by a good entry


def test_fit_uses_the_cache_beside_the_config_and_it_can_be_turned_off(tmp_path, cache_everything, parses, monkeypatch):
    make_csv(tmp_path / "d.csv")
    (tmp_path / "c.yaml").write_text("name: c\ndata: {train: d.csv, target: label}\ntrain: {epochs: 1}\n")
    first = check.check(tmp_path / "c.yaml")
    second = check.check(tmp_path / "c.yaml")
    assert parses == ["d.csv"]
    assert (tmp_path / ".dltrain-cache").is_dir()
    np.testing.assert_array_equal(first.data.train.in_memory().features, second.data.train.in_memory().features)
    check.check(tmp_path / "c.yaml", ["data.cache=false"])
    assert parses == ["d.csv", "d.csv"]
    monkeypatch.setenv(datacache.CACHE_ENV, str(tmp_path / "elsewhere"))
    check.check(tmp_path / "c.yaml")
    assert len(list((tmp_path / "elsewhere").glob("*.json"))) == 1


def test_small_files_and_unwritable_folders_skip_the_cache(tmp_path, monkeypatch, parses):
    path = make_csv(tmp_path / "d.csv")
    monkeypatch.setattr(datacache, "MIN_BYTES", 10**9)
    datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    columns = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "blocked" / "cache")
    assert columns.n_rows == 200


def test_arrays_replaced_behind_an_intact_record_are_ignored_and_rebuilt(tmp_path, cache_everything, parses):
    # Well-formed arrays of the right shapes and types, but not the CSV's: all-ones features.
    path = make_csv(tmp_path / "d.csv")
    expected = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    meta, folder = entry_files(tmp_path / "cache")
    record = meta.read_bytes()
    matrix = np.load(folder / "matrix.npy", allow_pickle=False)
    np.save(folder / "matrix.npy", np.ones_like(matrix))
    assert meta.read_bytes() == record
    columns = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    np.testing.assert_array_equal(columns.matrix, expected.matrix)
    assert len(parses) == 2
    again = datacache.read_columns(CsvFile.open(path), REQUEST, tmp_path / "cache")
    np.testing.assert_array_equal(again.matrix, expected.matrix)
    assert len(parses) == 2  # the rebuilt entry is used

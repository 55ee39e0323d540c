"""Reading a dataset file into the float32 .npy bytes the store keeps.

CSV files are read as a stream (a header row, numbers in every other cell, an optional label
column), straight into the .npy bytes of the features and labels, so memory stays near the size
of the result; a bad cell is refused with its line and column. A 1-D or 2-D numeric .npy array is
checked the same way. Nothing here writes: node/store.py stores what these readers return.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.errors import DatasetError, StoreError
from node.parsing import load_npy

__all__ = ["CsvTable", "npy_bytes", "read_csv", "read_file", "read_npy"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def npy_bytes(array: np.ndarray) -> bytes:
    """Deterministic .npy bytes, so equal arrays hash to the same blob."""
    buf = io.BytesIO()
    np.lib.format.write_array(
        buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False
    )
    return buf.getvalue()


def read_file(path: Path, error: type[StoreError], what: str) -> bytes:
    """An input file's bytes, or ``error`` saying what went wrong and what to do."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder; choose {what}") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror}); check its permissions") from None


def _open_csv(path: Path) -> io.BufferedReader:
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; choose a file") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc.strerror}); check its "
                           f"permissions") from None
    return f


def _not_utf8(path: Path) -> DatasetError:
    """The error for a file that is not UTF-8, naming the line of its first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1  # the line the next chunk starts on
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            held = decoder.getstate()[0]  # a character cut at the previous chunk's end (no \n)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = held + chunk  # what the decoder read; exc.start counts in it
                line += data.count(b"\n", 0, exc.start)
                return DatasetError(
                    f"{path.name} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                    "save the file as UTF-8 CSV and import it again"
                )
            line += chunk.count(b"\n")
    return DatasetError(  # cut off in the middle of a character
        f"{path.name} ends in the middle of a UTF-8 character; save the file as UTF-8 CSV and "
        "import it again"
    )


@dataclass
class CsvTable:
    """A CSV file read into the .npy bytes of its features (and labels)."""

    columns: list[str]
    shape: tuple[int, int]
    features: bytes | bytearray
    labels: bytes | bytearray | None


class _NpyBuilder:
    """The bytes of a float32 .npy file, written block by block as rows are read.

    The header is fixed at the end (its shape is known only then); the bytes equal those of
    ``np.save`` for the same array, so equal data still makes the same blob."""

    def __init__(self, columns: int | None) -> None:
        self.columns = columns  # None: a 1-D array (labels)
        self.rows = 0
        self._reserved = len(self._header(0))
        self.data = bytearray(self._reserved)

    def _header(self, rows: int) -> bytes:
        shape = (rows,) if self.columns is None else (rows, self.columns)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        return buf.getvalue()

    def add(self, block: np.ndarray) -> None:
        if block.size:
            self.data += np.ascontiguousarray(block, dtype="<f4").data.cast("B")
            self.rows += block.shape[0]

    def finish(self) -> bytearray:
        self.data[: self._reserved] = self._header(self.rows)  # a longer header moves the rest
        return self.data


_CSV_CHUNK_CHARS = 1 << 21  # text parsed at once: some 20 MB of Python objects at most
_CSV_BLOCK_CELLS = 1 << 17  # cells parsed at once when ``csv`` reads the records


def read_csv(
    path: Path, label_column: str | None, progress: Callable[[int, int], None] | None = None
) -> CsvTable:
    """Features, labels and column names from a CSV file, checked cell by cell.

    Streamed: the text is parsed in chunks of whole lines, each straight into the .npy bytes,
    and ``progress(bytes read, file size)`` is called after each chunk. Chunks of plain
    numbers take a quick path (``_parse_plain``); a chunk it does not take is read by ``csv``
    (``_parse_records``), which also words the errors, and so is the rest of a file once a
    quote appears (a quoted cell may hold a line end)."""
    fname = path.name
    with _open_csv(path) as raw:
        total = os.fstat(raw.fileno()).st_size
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            header, line = _read_header(fname, text, label_column)
            # a file of labels only: its one column is read as features, and is the labels
            only_labels = label_column is not None and header == [label_column]
            at = None if label_column is None or only_labels else header.index(label_column)
            features = _NpyBuilder(len(header) - (at is not None))
            labels = None if at is None else _NpyBuilder(None)
            carry = ""
            while True:
                chunk = text.read(_CSV_CHUNK_CHARS)
                data, carry = _whole_lines(carry + chunk, final=not chunk)
                if '"' in data or '"' in carry:
                    rest = io.StringIO(data + carry + text.readline(), newline="")
                    for table in _parse_records(fname, header, itertools.chain(rest, text), line):
                        _add_table(table, at, features, labels)
                        if progress is not None:
                            progress(raw.tell(), total)
                    break
                plain = _parse_plain(data, len(header))
                tables = [plain] if plain is not None else _parse_records(
                    fname, header, io.StringIO(data, newline=""), line)
                for table in tables:
                    _add_table(table, at, features, labels)
                line += _count_lines(data)
                if not chunk:
                    break
                if progress is not None:
                    progress(raw.tell(), total)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    if not features.rows:
        raise DatasetError(f"{fname} has a header but no data rows; add rows below the header")
    if progress is not None:
        progress(total, total)
    columns = header if at is None else [c for c in header if c != label_column]
    if only_labels:
        values = features.finish()
        return CsvTable(columns, (features.rows, 1), values,
                         npy_bytes(load_npy(values).reshape(-1)))
    return CsvTable(columns, (features.rows, len(columns)), features.finish(),
                     None if labels is None else labels.finish())


def _read_header(fname: str, text: io.TextIOWrapper,
                 label_column: str | None) -> tuple[list[str], int]:
    """The header (the first record that is not blank) and the line after it."""
    reader = csv.reader(text, strict=True)
    line = 1
    try:
        for record in reader:
            line = reader.line_num + 1
            if record and not (len(record) == 1 and not record[0].strip()):
                return _check_header(fname, record, label_column), line
    except csv.Error as exc:
        raise DatasetError(f"{fname} line {line}: not valid CSV ({exc}); fix the line") from None
    raise DatasetError(f"{fname} is empty; a dataset needs a header row and at least one data row")


def _whole_lines(text: str, final: bool) -> tuple[str, str]:
    """``text`` cut after its last line end: (whole lines, the rest)."""
    if final:
        return text, ""
    if "\n" in text:
        cut = text.rfind("\n") + 1
    else:  # a classic Mac file ends lines in "\r" alone; a last "\r" may be half of "\r\n"
        cut = text.rfind("\r", 0, len(text) - 1) + 1
    return text[:cut], text[cut:]


def _count_lines(text: str) -> int:
    """Lines as ``csv`` counts them: ended by "\n", "\r" or "\r\n"."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _parse_plain(text: str, columns: int) -> np.ndarray | None:
    """Whole lines of plain numbers as float64 rows, quickly (numpy's C reader); None if
    anything needs ``csv`` or a closer look.

    Only digits, signs, '.', 'e', ',', spaces, tabs and line ends pass: in such text ``csv``
    splits records and cells where numpy does and skips the same empty lines (a line of
    spaces numpy refuses, so ``csv`` reads that chunk), and numpy takes exactly the cells
    ``_parse_cell`` takes (no 'nan' or 'inf' can be spelt), with the same values."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:  # a classic Mac file
            return None
    if text.translate(_PLAIN_TEXT):
        return None
    if not text.strip():
        return np.empty((0, columns))
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=",", comments=None, quotechar=None,
                            dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    if values.shape[1] != columns or not np.isfinite(values).all() or \
            np.abs(values).max() > _FLOAT32_MAX:
        return None
    return values


_PLAIN_TEXT = str.maketrans("", "", "0123456789eE+-., \t\n")  # deletes what plain text holds


def _plain_numbers(text: str) -> bool:
    """Whether ``float`` can be trusted with the cells in ``text``: it takes every cell
    ``_parse_cell`` takes, with the same value, and besides only digit separators ('1_000')
    and non-ASCII digits, ruled out here, and non-finite values, ruled out by ``_numbers``."""
    return text.isascii() and "_" not in text


def _numbers(cells: list[str], rows: int, columns: int) -> np.ndarray | None:
    """Cells that passed ``_plain_numbers`` as float64 rows; None if one needs a closer look
    (not a number, not finite, or past float32)."""
    try:
        values = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
    except ValueError:
        return None
    if values.size and (not np.isfinite(values).all() or np.abs(values).max() > _FLOAT32_MAX):
        return None
    return values.reshape(rows, columns)


def _parse_records(fname: str, header: list[str], lines: Iterable[str],
                   first_line: int) -> Iterator[np.ndarray]:
    """CSV records as float64 tables of a few thousand rows: the reference for what is
    accepted, and where every error is worded, with its line."""
    reader = csv.reader(lines, strict=True)
    rows_per_block = max(1, _CSV_BLOCK_CELLS // len(header))
    block: list[list[str]] = []
    starts: list[int] = []  # the line each record of the block starts on
    line = first_line  # the line the next record starts on
    try:
        for record in reader:
            start, line = line, first_line + reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(header):
                if block:  # a bad cell above this row is the first error
                    _block_table(fname, header, block, starts)
                raise DatasetError(
                    f"{fname} line {start}: expected {len(header)} cells (one per header "
                    f"column), found {len(record)}; fix the row or remove it"
                )
            block.append(record)
            starts.append(start)
            if len(block) >= rows_per_block:
                yield _block_table(fname, header, block, starts)
                block, starts = [], []
    except csv.Error as exc:
        raise DatasetError(f"{fname} line {line}: not valid CSV ({exc}); fix the line") from None
    if block:
        yield _block_table(fname, header, block, starts)


def _block_table(fname: str, header: list[str], block: list[list[str]],
                 starts: list[int]) -> np.ndarray:
    cells = [cell for record in block for cell in record]
    table = _numbers(cells, len(block), len(header)) if _plain_numbers("".join(cells)) else None
    if table is None:  # cell by cell, so that the error names the line, column and value
        table = np.array(
            [[_parse_cell(fname, start, header[i], cell) for i, cell in enumerate(record)]
             for start, record in zip(starts, block)],
            dtype=np.float64,
        )
    return table


def _add_table(table: np.ndarray, at: int | None, features: _NpyBuilder,
               labels: _NpyBuilder | None) -> None:
    if at is None:
        features.add(table)
    else:
        assert labels is not None
        features.add(np.delete(table, at, axis=1))
        labels.add(table[:, at])


def _check_header(fname: str, record: list[str], label_column: str | None) -> list[str]:
    header = [c.strip() for c in record]
    for i, col in enumerate(header):
        if not col:
            raise DatasetError(
                f"{fname} line 1: column {i + 1} has no name; "
                "give every column a name in the header row"
            )
    if len(header) == 1 and ";" in record[0]:
        raise DatasetError(
            f"{fname} line 1 looks separated by ';' rather than ','; save it as comma-separated CSV"
        )
    first: dict[str, int] = {}
    for i, col in enumerate(header):
        if col in first:
            raise DatasetError(
                f"{fname} line 1: column name {col!r} appears twice (columns {first[col] + 1} and "
                f"{i + 1}); rename one of them"
            )
        first[col] = i
    if label_column is not None:
        if label_column not in first:
            raise DatasetError(
                f"{fname} has no column {label_column!r} to use as labels; its columns are: "
                f"{', '.join(header)}"
            )
    return header


def _parse_cell(fname: str, line: int, column: str, cell: str) -> float:
    where = f"{fname} line {line}, column {column!r}"
    text = cell.strip()
    if not text:
        raise DatasetError(
            f"{where}: {cell!r} is an empty cell, not a number; fill it in or remove the row"
        )
    if not _NUMBER_RE.fullmatch(text):
        raw = text.lower().lstrip("+-")
        if raw in ("nan", "inf", "infinity"):
            raise DatasetError(
                f"{where}: {cell!r} is not a finite number; fix the cell or remove the row"
            )
        raise DatasetError(f"{where}: {cell!r} is not a number; fix the cell or remove the row")
    value = float(text)
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise DatasetError(
            f"{where}: {cell!r} is too large for a 32-bit float; scale the column or remove the row"
        )
    return value


def read_npy(path: Path) -> np.ndarray:
    fname = path.name
    if not path.exists():
        raise DatasetError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; choose a .npy file")
    try:
        loaded = load_npy(path)
    except ValueError as exc:
        if "allow_pickle" in str(exc) and "Object arrays" in str(exc):
            raise DatasetError(
                f"{fname} holds Python objects (dtype object), which Parley never loads because "
                "unpickling can run code; save a numeric array, "
                "e.g. numpy.save(f, a.astype('float32'))"
            ) from None
        raise DatasetError(
            f"{fname} is not a .npy array file; save one array with numpy.save and import that"
        ) from None
    except (OSError, EOFError):  # truncated header, unreadable file
        raise DatasetError(
            f"{fname} is not a readable .npy file; save one array with numpy.save and import that"
        ) from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DatasetError(
            f"{fname} is an .npz archive; save one array with numpy.save and import that"
        )
    array = loaded
    if array.dtype.names is not None or not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
        or array.dtype == np.bool_
    ):
        raise DatasetError(
            f"{fname} holds {array.dtype} values; a dataset must be integers or real numbers"
        )
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise DatasetError(
            f"{fname} has shape {tuple(array.shape)}; a dataset is 1-D (one column) or 2-D "
            "(rows x columns): reshape it, e.g. a.reshape(len(a), -1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DatasetError(
            f"{fname} has shape {tuple(array.shape)}: no data; it needs rows and columns"
        )
    with np.errstate(over="ignore"):
        features = array.astype(np.float32)
    bad = np.argwhere(~np.isfinite(features))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise DatasetError(
            f"{fname}: {len(bad)} value(s) are NaN, infinite or too large for a 32-bit float, the "
            f"first at row {row}, column {col}; fix or drop them before importing"
        )
    return features

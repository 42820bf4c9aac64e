"""Reading the MNIST CSV files and saved models a user hands train_mnist.py, and refusing in
one line what it cannot use: CSV files in any layout and compression, models saved by --save.
Each refusal is a DataError naming the file, line and column where it can, what was expected
and what came."""

import bz2
import contextlib
import csv
import dataclasses
import gzip
import io
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from typing import Optional

import numpy as np
import pandas as pd

from nn import Network

PIXELS = 784                     # 28 x 28
CLASSES = 10


class DataError(Exception):
    """A problem with an input file or flag, told to the user in one line (exit status 2)."""


def printable(text):
    """A file name (or any text from outside) as it may be shown on a terminal: every control
    character (an escape sequence, a carriage return, a newline) and every character the
    output could not encode (a name's undecodable bytes) written as its escape, never raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _count(number, noun):
    """'1 column', '785 columns'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _where(path, line=None, column=None):
    """'FILE, line L, column C': the start of an error message."""
    return str(path) + (f", line {line}" if line else "") + (f", column {column}" if column else "")


def check_regular_file(path, expected="a CSV file"):
    """Refuse up front what cannot be read as a file: a missing path, a folder, or a pipe or
    device (reading a FIFO that nobody writes to would wait forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: could not be read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, expected {expected}")
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DataError(f"{path}: is {kind}, not a regular file; expected {expected}")



# ----------------------------------------------------------------------------------------------
# 1. MNIST CSV files
# ----------------------------------------------------------------------------------------------
# load_mnist_csv reads a table of digits, one a row: a label 0-9 (first, or in a column named
# label, target, class, y or digit; none in a file to predict) and 784 pixels 0-255, with or
# without a header row, plain or compressed (gzip, bz2, xz, zip, tar), in chunks of bounded
# memory, every line of it bounded. It refuses the first bad cell by its line and column.

LABEL_NAMES = ("label", "target", "class", "y", "digit")   # a header's names for the label
LONGEST_LINE = 65_536            # bytes: any sensible header of 785 names or row of 785 numbers
                                 # fits many times over
CHUNK_ROWS = 10_000              # rows parsed at a time, so pandas' working memory stays small

# The first bytes of a file say how it is compressed, whatever its name says.
MAGIC_NUMBERS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz",
                 b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x28\xb5\x2f\xfd": "zstd",
                 b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar", b"\x04\x22\x4d\x18": "lz4"}
DECOMPRESSORS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
               tarfile.TarError, UnicodeDecodeError)


@contextlib.contextmanager
def _reading(path):
    """Turn every way a file can fail to read into a DataError that names it."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: has no data rows") from None
    except pd.errors.ParserError as error:
        detail = str(error).strip().splitlines()[-1]
        width = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", detail)
        if width:
            expected, line, found = width.groups()
            raise DataError(f"{_where(path, line)}: found {found} columns, expected {expected}") \
                from None
        raise DataError(f"{path}: not a well-formed CSV table ({detail})") from None
    except csv.Error as error:           # read again to quote a cell: too long a field, ...
        raise DataError(f"{path}: not a well-formed CSV table ({error})") from None
    except READ_ERRORS as error:         # damaged or truncated compression, unreadable files
        raise DataError(f"{path}: could not be read ({type(error).__name__}: {error})") from None


def _only_file_in(path, kind, members):
    if len(members) != 1:
        raise DataError(f"{path}: a {kind} archive holding {len(members)} files; expected "
                        f"exactly one CSV file in it")
    return members[0]


def _is_tar(path):
    try:
        return tarfile.is_tarfile(path)      # plain, or compressed with gzip, bz2 or xz
    except READ_ERRORS:
        return False


def _decompressed(path, opened):
    """The file's bytes as a stream, decompressed; `opened` (an ExitStack) will close it."""
    if _is_tar(path):
        archive = opened.enter_context(tarfile.open(path))
        member = _only_file_in(path, "tar", [m for m in archive.getmembers() if m.isfile()])
        return opened.enter_context(archive.extractfile(member))
    with open(path, "rb") as file:
        start = file.read(8)
    kind = next((kind for magic, kind in MAGIC_NUMBERS.items() if start.startswith(magic)), None)
    if kind == "zip":
        archive = opened.enter_context(zipfile.ZipFile(path))
        member = _only_file_in(path, "zip", [i for i in archive.infolist() if not i.is_dir()])
        return opened.enter_context(archive.open(member))
    if kind in DECOMPRESSORS:
        return opened.enter_context(DECOMPRESSORS[kind](path, "rb"))
    if kind is not None:
        raise DataError(f"{path}: is compressed with {kind}, which this program does not read; "
                        f"expected a CSV file, plain or compressed with gzip, bz2, xz or zip")
    return opened.enter_context(open(path, "rb"))


@contextlib.contextmanager
def _open(path):
    """Open a CSV file for reading, plain or compressed; closes everything it opened."""
    with _reading(path), contextlib.ExitStack() as opened:
        yield _decompressed(path, opened)


def _cells(raw):
    """The cells of one line of CSV (bytes without its line end: nothing csv refuses)."""
    return next(csv.reader([raw.decode("utf-8-sig", errors="replace")]), [])


class _BoundedLines(io.RawIOBase):
    """A stream's bytes, passed on while every line stays within LONGEST_LINE bytes: a longer
    line (a cell of a gigabyte, say) is refused as soon as its first 64 KB have gone by,
    whatever line it is on, so pandas never holds more than that of it. Lines ended the old
    Mac way (\r) or Windows' (\r\n) are passed on ended by \n."""

    def __init__(self, path, stream):
        super().__init__()
        self.path, self.stream = path, stream
        self.line, self.line_length = 1, 0   # the line being read, and its bytes so far
        self.after_cr = False                # the last piece ended with \r

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(min(len(buffer), 1 << 18))
        if self.after_cr and data[:1] == b"\n":     # the \n of a \r\n cut between two pieces
            data = data[1:] or self.stream.read(min(len(buffer), 1 << 18))
        self.after_cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        if len(ends):
            lengths = np.diff(ends, prepend=-1) - 1          # each line's bytes in this piece
            lengths[0] += self.line_length                   # the first one began before it
            self._check(int(lengths.max()), int(np.argmax(lengths)))
            self.line += len(ends)
            self.line_length = len(data) - int(ends[-1]) - 1
        else:
            self.line_length += len(data)
        self._check(self.line_length, 0)
        buffer[:len(data)] = data
        return len(data)

    def _check(self, length, lines_on):
        if length > LONGEST_LINE:
            raise DataError(f"{_where(self.path, self.line + lines_on)}: longer than "
                            f"{LONGEST_LINE:,} bytes, far more than a row of 785 numbers needs")


def _first_line_cells(path):
    """The cells of the file's first line, read in bounded memory: a line too long to be an
    MNIST row or header is refused after 64 KB, however long it goes on."""
    with _open(path) as stream:
        raw = stream.readline(LONGEST_LINE + 1)
    if not raw:
        raise DataError(f"{path}: the file is empty")
    raw = (raw.splitlines() or [b""])[0]     # up to its end: \n, \r\n, or an old Mac's \r
    if b"\x00" in raw:
        raise DataError(f"{_where(path, 1)}: binary data, expected comma-separated numbers")
    if len(raw) > LONGEST_LINE:
        raise DataError(f"{_where(path, 1)}: more than {raw.count(b','):,} columns in its first "
                        f"{LONGEST_LINE:,} bytes, expected 785 columns")
    return _cells(raw)


WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
MISSING = ("", "na", "nan", "n/a", "null", "none", "-", "?")   # how cells say "no value"


def _reads_as_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _shortened(text, longest=20):
    """A cell's text for a message: at most its first `longest` characters."""
    return text if len(text) <= longest else text[:longest] + "..."


@dataclasses.dataclass
class Layout:
    """How a CSV file is laid out, as read from its first line."""
    columns: int                 # 784 (pixels only) or 785 (a label and the pixels)
    first_line: int              # the file line of the first example: 2 after a header row
    label_column: Optional[int]  # where the label is (0-based), None for pixels only


def _layout(path, cells, labelled):
    """Decide from the first line's cells whether it is a header, and where the label is."""
    columns = len(cells)
    expected = "785 columns (a label and 784 pixels)"
    if not labelled:
        expected = "784 pixel columns (or 785 with a label)"
    if columns not in ((PIXELS + 1,) if labelled else (PIXELS, PIXELS + 1)):
        if columns == 1 and (";" in cells[0] or "\t" in cells[0]):
            expected += ", separated by commas"
        raise DataError(f"{_where(path, 1)}: found {_count(columns, 'column')}, expected "
                        f"{expected}")
    # A header is a row of names, none of them a number; data is a row mostly of numbers (one
    # with a bad cell or two, "0a", "NA" or an empty cell, is data, and the checks below
    # refuse it). A row that is neither is refused rather than guessed.
    numbers = sum(_reads_as_number(cell) for cell in cells)
    names = sum(not _reads_as_number(cell) and cell.strip().lower() not in MISSING
                for cell in cells)
    header = numbers == 0 and names > columns / 2
    if not header and numbers <= columns / 2:
        raise DataError(f"{_where(path, 1)}: neither clearly a header (names) nor clearly data "
                        f"(numbers): {numbers:,} of its {columns} cells are numbers and "
                        f"{columns - numbers - names:,} are empty or missing (such as NA); "
                        f"expected a row of column names or a row of {columns} numbers")
    first_line = 2 if header else 1
    if columns == PIXELS:
        return Layout(columns, first_line, None)
    if not header:
        return Layout(columns, first_line, 0)    # no names: the label comes first, as in MNIST
    names = [cell.strip().lower() for cell in cells]
    found = [i for i, name in enumerate(names) if name in LABEL_NAMES]
    if len(found) != 1:
        which = (f"{len(found)} columns ({', '.join(repr(cells[i]) for i in found)})" if found
                 else "no column")
        raise DataError(f"{_where(path, 1)}: the header names {which} as the label; expected "
                        f"one column named {', '.join(LABEL_NAMES[:-1])} or {LABEL_NAMES[-1]}")
    return Layout(columns, first_line, found[0])


def _cells_of_line(path, line):
    """Read the file's line `line` again, to quote what is in it: a row as pandas counts them,
    a line break inside quotes going on with the same row (an odd number of quotes so far)."""
    row, quotes, parts = 1, 0, []
    with _open(path) as stream, io.TextIOWrapper(stream, "utf-8-sig", errors="replace",
                                                 newline="") as lines:
        for text in lines:
            if row == line:
                parts.append(text)
            quotes += text.count('"')
            if quotes % 2 == 0:              # the row ends with this line
                if row == line:
                    break
                row, quotes = row + 1, 0
        return next(csv.reader(parts), [])   # a cell over csv's limit: refused by _reading


def _refuse_cell(path, line, column, layout):
    """The first cell pandas could not read as a number: say what it holds."""
    cells = _cells_of_line(path, line)
    if len(cells) < layout.columns:
        found = f"only {_count(len(cells), 'column')}" if cells else "an empty line"
        raise DataError(f"{_where(path, line)}: found {found}, expected {layout.columns} columns")
    text = cells[column].strip()
    found = "an empty cell" if not text else repr(_shortened(text))
    raise DataError(f"{_where(path, line, column + 1)}: found {found}, expected a number")


def _column_numbers(cells):
    """One column of a chunk as float64, NaN where a cell is not a number, and infinity for a
    whole number too large for any float (so that the range check names it)."""
    if cells.dtype.kind == "b":              # pandas reads True/False as booleans: not digits
        return np.full(len(cells), np.nan)
    text = cells.astype(str)                 # whole numbers too large for int64 come as ints
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    for row in np.flatnonzero(np.isnan(numbers)):
        cell = str(text.iloc[row]).strip()   # pandas 3 keeps a missing cell missing
        if WHOLE_NUMBER.fullmatch(cell):     # NaN in older pandas
            numbers[row] = -np.inf if cell.startswith("-") else np.inf
    return numbers


def _as_numbers(path, chunk, line, layout):
    """A chunk of the table as float64, which tells 254.99999999 and 1e-50 from whole numbers
    (float32 would round them to whole ones). The first cell that is not a number (text,
    True/False, an empty cell, a short row) is refused, by name."""
    if all(dtype.kind in "iuf" for dtype in chunk.dtypes):
        values = chunk.to_numpy(np.float64)  # the usual case: pandas read every column as numbers
    else:                                    # only the columns that hold text, one by one
        values = np.column_stack([cells.to_numpy(np.float64) if cells.dtype.kind in "iuf"
                                  else _column_numbers(cells) for _, cells in chunk.items()])
    missing = np.isnan(values)               # empty cells and NA too
    if missing.any():
        row, column = np.argwhere(missing)[0]
        _refuse_cell(path, line + int(row), int(column), layout)
    return values


def _checked_split(path, values, line, layout, labelled):
    """Check a chunk's values and split it into labels (int64, or None) and pixels (uint8)."""
    highest = np.full(layout.columns, 255.0)
    if layout.label_column is not None:
        highest[layout.label_column] = CLASSES - 1
    bad = (values < 0) | (values > highest) | (values != np.floor(values))
    if layout.label_column is not None and not labelled:
        bad[:, layout.label_column] = False  # a label column to ignore
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        where = _where(path, line + row, column + 1)
        text = _shortened(_cells_of_line(path, line + row)[column].strip())   # as the file says
        if column == layout.label_column:
            raise DataError(f"{where}: label {text} is not a digit 0-9")
        value = values[row, column]
        problem = "is outside 0-255" if not 0 <= value <= 255 else "is not a whole number 0-255"
        raise DataError(f"{where}: pixel value {text} {problem}")
    if layout.label_column is None:
        return None, values.astype(np.uint8, order="C")   # exact: checked above
    labels = values[:, layout.label_column].astype(np.int64) if labelled else None
    return labels, np.delete(values, layout.label_column, axis=1).astype(np.uint8, order="C")


def load_mnist_csv(path, nrows=None, labelled=True):
    """Read an MNIST CSV file; returns (pixels, labels).

    pixels: float32 (rows, 784) scaled to [0, 1], rows contiguous in memory.
    labels: int64 (rows,) in 0..9, or None when labelled=False (a file to predict; a label
    column, if present, is then ignored).
    Raises DataError naming the file, the line and column where it can, and what was expected.
    """
    check_regular_file(path)
    layout = _layout(path, _first_line_cells(path), labelled)
    label_parts, pixel_parts, line = [], [], layout.first_line
    # Whole chunks of rows at a time; the checked pixels are kept as bytes (a quarter of
    # float32's memory) until the end, where they become one float32 array.
    with _open(path) as stream, pd.read_csv(
            io.BufferedReader(_BoundedLines(path, stream)), header=None,
            names=range(layout.columns), skiprows=layout.first_line - 1,
            nrows=nrows, chunksize=CHUNK_ROWS, low_memory=False, skip_blank_lines=False,
            encoding_errors="replace") as chunks:
        for chunk in chunks:
            values = _as_numbers(path, chunk, line, layout)
            labels, pixels = _checked_split(path, values, line, layout, labelled)
            label_parts.append(labels)
            pixel_parts.append(pixels)
            line += len(chunk)
    if line == layout.first_line:
        raise DataError(f"{path}: has no data rows")
    pixels = np.concatenate(pixel_parts, dtype=np.float32)
    pixels /= 255                            # scale to [0, 1], in place
    return pixels, (np.concatenate(label_parts) if labelled else None)


def load_model(path):
    """A model saved by train_mnist.py --save, checked to take MNIST's 784 pixels to 10
    probabilities: the script's reports (confidence, the probability column) rely on them."""
    check_regular_file(path, expected="a model file saved by --save")
    try:
        net = Network.load(path)
    except ValueError as error:              # nn's message names the file and what is wrong
        raise DataError(str(error)) from None    # (nn never unpickles; the file exists)
    expected = f"expected a model that takes MNIST's {PIXELS} pixels to {CLASSES} digit " \
               f"probabilities"
    takes = tuple(net.input_shape or ())     # as the file says
    try:
        outputs = net.predict(np.zeros((1, PIXELS), dtype=np.float32))
    except ValueError:
        raise DataError(f"{path}: the model does not take {PIXELS} pixels (it takes inputs of "
                        f"shape {takes}); {expected}") from None
    if outputs.shape != (1, CLASSES):
        raise DataError(f"{path}: the model gives {outputs.size:,} outputs for an image; "
                        f"{expected}")
    total = float(outputs.sum())
    if not (outputs.min() >= 0 and abs(total - 1) < 1e-3):
        raise DataError(f"{path}: the model's {CLASSES} outputs are not probabilities (for a "
                        f"blank image they sum to {total:.4g}, the lowest {outputs.min():.4g}); "
                        f"{expected}, such as one ending in Softmax as --save writes")
    return net

"""Reading what a user hands train_mnist.py, and refusing in one line what it cannot use:
MNIST CSV files in any layout and compression, saved models, pictures of digits prepared as
MNIST's were, flag values. Each refusal is a DataError (or argparse's error for a flag) naming
the file, line and column where it can, what was expected and what came."""

import argparse
import bz2
import contextlib
import csv
import dataclasses
import gzip
import importlib
import io
import itertools
import lzma
import os
import re
import stat
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from typing import Optional

import numpy as np
import pandas as pd

from nn import Network
from outputs import describe

PIXELS = 784                     # 28 x 28
CLASSES = 10


class DataError(Exception):
    """A problem with an input file or flag, told to the user in one line (exit status 2)."""


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
    """The cells of one line of CSV, given as bytes."""
    return next(csv.reader([raw.decode("utf-8-sig", errors="replace")]), [])


class _BoundedLines(io.RawIOBase):
    """A stream's bytes, passed on unchanged while every line stays within LONGEST_LINE bytes:
    a longer line (a cell of a gigabyte, say) is refused as soon as its first 64 KB have gone
    by, whatever line it is on, so pandas never holds more than that of it."""

    def __init__(self, path, stream):
        super().__init__()
        self.path, self.stream = path, stream
        self.line, self.line_length = 1, 0   # the line being read, and its bytes so far

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(min(len(buffer), 1 << 18))
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
    if b"\x00" in raw:
        raise DataError(f"{_where(path, 1)}: binary data, expected comma-separated numbers")
    if len(raw) > LONGEST_LINE:
        raise DataError(f"{_where(path, 1)}: more than {raw.count(b','):,} columns in its first "
                        f"{LONGEST_LINE:,} bytes, expected 785 columns")
    return _cells(raw)


WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
MISSING = ("", "na", "nan", "n/a", "null", "none", "-", "?")   # how cells say "no value"


def _is_number(text):
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
    numbers = sum(_is_number(cell) for cell in cells)
    names = sum(not _is_number(cell) and cell.strip().lower() not in MISSING for cell in cells)
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
    """Read one line of the file again, to quote what is in it."""
    with _open(path) as stream:
        raw = next(itertools.islice(stream, line - 1, None), b"")
    return _cells(raw.rstrip(b"\r\n")) if raw.strip() else []


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
        if WHOLE_NUMBER.fullmatch(text.iloc[row].strip()):     # NaN in older pandas
            numbers[row] = -np.inf if text.iloc[row].strip().startswith("-") else np.inf
    return numbers


def _as_numbers(path, chunk, line, layout):
    """A chunk of the table as float64, which tells 254.99999999 and 1e-50 from whole numbers
    (float32 would round them to whole ones). The first cell that is not a number (text,
    True/False, an empty cell, a short row) is refused, by name."""
    if all(dtype.kind in "iuf" for dtype in chunk.dtypes):
        values = chunk.to_numpy(np.float64)  # the usual case: pandas read every column as numbers
    else:
        values = np.column_stack([_column_numbers(cells) for _, cells in chunk.items()])
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


# ----------------------------------------------------------------------------------------------
# 2. Pictures of digits, prepared as MNIST's were
# ----------------------------------------------------------------------------------------------
# prepare turns a picture of one digit (a drawing, a scan, a phone photo) into the 784 pixels
# MNIST would have made of it, keeping every step to look at; read_brightness reads a picture
# file (refusing what is not one, or is too large, before decoding it); read_image does both,
# exactly as --predict does; read_to_predict reads --predict's paths: one CSV file, or images
# and folders of them, each picture refused on its own.

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
LUMA = np.array([0.299, 0.587, 0.114])     # brightness of red, green, blue (ITU-R 601, as Pillow)
MAX_PICTURE_PIXELS = 50_000_000   # larger pictures are refused before decoding (8,000 x 6,000
                                  # fits); reading one at the limit peaks near 0.5 GB
DECODED_SIDE = 2000          # pixels: a decoded picture is reduced to this longer side at once
WORKING_SIDE = 1000          # pixels: a photo is shrunk to this longer side before preparation
ANALYSIS_SIDE = 80           # pixels: the page and its lighting are judged at this longer side
PAGE_SCALE = 0.4             # ink is narrower than this share of the picture's longer side
SHEET_SCALE = 0.08           # a sheet of paper, or the desk around it, is wider than this


def load_model(path, say=print):
    """A model saved by train_mnist.py --save, checked to map MNIST's 784 pixels to 10
    probabilities; say(...) tells what was loaded."""
    check_regular_file(path, expected="a model file saved by --save")
    try:
        net = Network.load(path)
    except ValueError as error:              # nn's message names the file and what is wrong
        raise DataError(str(error)) from None    # (nn never unpickles; the file exists)
    try:
        outputs = net.predict(np.zeros((1, PIXELS), dtype=np.float32))
    except ValueError:
        outputs = None
    if outputs is None or outputs.shape != (1, CLASSES):
        raise DataError(f"{path}: the model does not take MNIST's {PIXELS} pixels to {CLASSES} "
                        f"digit probabilities ({describe(net)})")
    say(f"model:  {describe(net)} loaded from {path}, {net.count_params():,} parameters")
    return net


def is_image_name(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def _resized(array, width, height):
    """A 2-D float array resampled to width x height with Pillow's Lanczos filter, which
    averages many pixels into one when shrinking (anti-aliasing) and interpolates smoothly
    when enlarging."""
    from PIL import Image
    image = Image.fromarray(array.astype(np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _reduced(image):
    """A decoded picture with more pixels than preparation uses, reduced (averaging blocks of
    pixels) to at most 2,000 pixels a side while it still has 1-4 bytes a pixel: the float
    arrays made from it stay small, whatever the picture's shape."""
    factor = -(-max(image.size) // DECODED_SIDE)          # ceiling division
    if factor <= 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;"):   # modes reduce does not take
        image = image.convert({"1": "L", "P": "RGBA"}.get(image.mode, "I"))
    return image.reduce(factor)


def _brightness(image):
    """Every pixel's brightness as a float, from any mode: RGB, palette, 16-bit, with alpha..."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(_reduced(image))   # a phone photo: turned as it was held
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # See-through pixels show the page behind them. Drawing apps save dark strokes on a
        # transparent page, so put the image on a page that contrasts with what is drawn.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        colour, opacity = rgba[..., :3] @ LUMA, rgba[..., 3]
        drawn = opacity > 0.5
        page = 1.0 if not drawn.any() or colour[drawn].mean() < 0.5 else 0.0
        return opacity * colour + (1 - opacity) * page
    return np.asarray(image.convert("F"), dtype=np.float64)   # "F": floats, any bit depth


def _shifted_extreme(array, radius, pick, extend="edge"):
    """The max (pick=np.maximum) or min over a (2r+1) x (2r+1) square around each pixel: two
    passes of 2r+1 shifted copies (rows, then columns). Beyond the picture's edge its edge
    pixels are repeated (extend="edge") or its slopes continued (extend="slope"), so that
    light that falls off towards an edge is followed to the edge."""
    options = {"mode": "reflect", "reflect_type": "odd"} if extend == "slope" else {"mode": "edge"}
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (radius, radius)
        padded, length = np.pad(array, padding, **options), array.shape[axis]
        result = np.take(padded, range(0, length), axis=axis)
        for shift in range(1, 2 * radius + 1):
            result = pick(result, np.take(padded, range(shift, shift + length), axis=axis))
        array = result
    return array


def _closing(array, radius):
    """Morphological closing: dark features narrower than 2r+1 pixels filled with what is
    around them (the page behind the ink), larger shapes kept where they are."""
    return _shifted_extreme(_shifted_extreme(array, radius, np.maximum, "slope"), radius,
                            np.minimum, "slope")


def _opening(array, radius):
    """Morphological opening: light features narrower than 2r+1 pixels taken away."""
    return -_closing(-array, radius)


def _otsu(values, bins=64):
    """Otsu's threshold: the value that splits `values` into the two most distinct classes."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return edges[1 + int(between.argmax())] if between.max() > 0 else edges[-1]


def _without_specks(inked):
    """Keep only the inked pixels that have an inked neighbour (of the 8 around them)."""
    padded = np.pad(inked, 1)
    height, width = inked.shape
    neighbours = sum(padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return inked & (neighbours > 0)


def _without_rules(ink, noise):
    """Notebook rules are not ink. A rule is a thin line of faint ink across the whole page,
    so the median of its row (or column) is well above the page's noise, which no stroke of a
    digit that covers less than half of the row can do. Three or more of them (lined or
    squared paper), or one much thinner than the picture (a margin), are taken away: each row's
    median is subtracted from it, so that a stroke crossing a rule stays."""
    ink = ink.copy()
    for turned in (False, True):                  # rows (horizontal rules), then columns
        view = ink.T if turned else ink
        medians = np.median(view, axis=1)
        ruled = medians > max(3 * noise, 0.05)
        starts = np.flatnonzero(np.diff(ruled.astype(np.int8), prepend=0) == 1)
        stops = np.flatnonzero(np.diff(ruled.astype(np.int8), append=0) == -1) + 1
        length = view.shape[0]
        thin = max(3, round(0.02 * length)) if len(starts) >= 3 else 0.02 * length
        for start, stop in zip(starts, stops):
            if stop - start <= thin:
                view[start:stop] = np.clip(view[start:stop] - medians[start:stop, None], 0, 1)
    return ink


def _without_strays(inked):
    """Ink apart from the digit is not the digit: a group of rows (or columns) at an edge of
    the ink, cut off from the rest by empty ones and holding under 2% of the ink (a speck of
    dust, noise in a dark corner, an edge of the sheet), is taken away."""
    inked = inked.copy()
    for axis in (1, 0):                           # groups of rows, then of columns
        profile = inked.sum(axis=axis)
        total = profile.sum()
        while True:
            filled = np.flatnonzero(profile)
            groups = np.split(filled, np.flatnonzero(np.diff(filled) > 1) + 1)
            if len(groups) < 2:
                break
            smaller = min(groups[0], groups[-1], key=lambda group: profile[group].sum())
            if profile[smaller].sum() >= 0.02 * total:
                break
            profile[smaller] = 0
            if axis == 1:
                inked[smaller] = False
            else:
                inked[:, smaller] = False
    return inked


@dataclasses.dataclass
class Preparation:
    """Every step of preparing one picture (see prepare), to look at one by one."""
    gray: np.ndarray             # brightness stretched to 0..1, at most 1,000 pixels a side
                                 # (turned around, 1 - brightness, for a dark page)
    light_page: bool             # dark ink on a light page, or (False) light ink on a dark one
    page: np.ndarray             # the page's brightness behind each pixel: its lighting, shadows
    sheet: Optional[np.ndarray]  # where a sheet of paper lies on a darker surface, or None
    ink: np.ndarray              # how far each pixel is from its page towards the ink, 0..1
    inked: np.ndarray            # the pixels taken for ink (bool)
    digit: Optional[np.ndarray]  # the 784 pixels MNIST would have made, or None: no ink found


def _split(small):
    """Otsu's split of a picture into its dark and light pixels: (dark mask, how dark the dark
    ones are against the light ones, the share of each side, top, bottom, left, right, that is
    dark)."""
    dark = small < _otsu(small)
    sides = np.array([dark[0].mean(), dark[-1].mean(), dark[:, 0].mean(), dark[:, -1].mean()])
    if dark.all() or not dark.any():
        return dark, 1.0, sides
    return dark, small[dark].mean() / max(small[~dark].mean(), 1e-6), sides


def _sheet(small):
    """Where a light sheet of paper lies on a darker surface (a desk), as a mask of the small
    picture, or None. The picture's broad shapes (strokes of ink taken away, light or dark)
    are split into dark and light: a sheet is a large light shape, much lighter than the dark
    one, which takes up most of the border and three of its corners, and it is mostly paper
    (not thick light strokes around dark holes, as a bold digit on a dark page is)."""
    radius = max(1, round(SHEET_SCALE * max(small.shape) / 2))
    dark, contrast, sides = _split(_opening(_closing(small, radius), radius))
    if contrast > 0.6 or sides.mean() < 0.6 or not 0.3 <= (~dark).mean() <= 0.85:
        return None                     # a shadow, a page seen whole, or a digit cropped tight
    ends = (slice(0, radius), slice(-radius, None))
    corners = sum(dark[rows, columns].mean() > 0.5 for rows in ends for columns in ends)
    inked = (small < _otsu(small))[~dark].mean()
    if corners < 3 or inked > 0.25:
        return None
    return _shifted_extreme((~dark).astype(np.uint8), 2, np.minimum).astype(bool)


def _resized_mask(mask, width, height):
    from PIL import Image
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 127


def prepare(brightness, background="auto"):
    """Make a picture of one digit into the 784 pixels MNIST would have made of it, keeping
    every step (a Preparation; its .digit is the result, None when no ink was found).

    brightness: 2-D array (height, width), any scale. background: "auto" (decide from the
    picture), "light" (dark ink on a light page) or "dark" (light ink on a dark page).

    >>> picture = np.full((60, 40), 230.0)           # a light page...
    >>> picture[10:50, 18:23] = 40                   # ...with a dark stroke: a 1
    >>> steps = prepare(picture)
    >>> steps.light_page, steps.digit.shape, float(steps.digit.max())
    (True, (784,), 1.0)
    """
    brightness = np.asarray(brightness, dtype=np.float64)
    # 1. A phone photo has far more pixels than a 20-pixel digit needs: shrink it so its
    #    longer side is at most 1,000 pixels (faster, and averaging smooths the noise).
    height, width = brightness.shape
    if max(height, width) > WORKING_SIDE:
        scale = WORKING_SIDE / max(height, width)
        brightness = _resized(brightness, max(1, round(width * scale)),
                              max(1, round(height * scale)))
        height, width = brightness.shape
    # 2. Stretch the picture's own darkest..lightest to 0..1, whatever its bit depth or exposure.
    low, high = brightness.min(), brightness.max()
    gray = (brightness - low) / (high - low) if high > low else np.zeros_like(brightness)
    # 3. Page and ink, judged on a small copy of the whole picture (not its border, which a
    #    tight crop fills with ink). A light sheet of paper on a darker desk: the digit is on
    #    the sheet. Otherwise the page is light (dark ink on paper, a drawing app) unless most
    #    of the picture and three of its four sides are much darker than the rest (light ink
    #    on a dark page: a chalkboard, MNIST itself; a tight crop of a dark 1 is dark at the
    #    top and bottom only). --background overrides the guess.
    scale = min(1.0, ANALYSIS_SIDE / max(height, width))
    small_size = max(1, round(width * scale)), max(1, round(height * scale))
    small = _resized(gray, *small_size) if scale < 1 else gray
    sheet = _sheet(small) if background != "dark" else None
    if background == "auto" and sheet is None:
        dark, contrast, sides = _split(small)
        light_page = not (dark.mean() > 0.5 and (sides > 0.5).sum() >= 3 and contrast < 0.6)
    else:
        light_page = background != "dark"
    # 4. The page behind the ink: what is left when every feature narrower than ink can be
    #    (PAGE_SCALE) is filled in with what surrounds it (a morphological closing). It
    #    follows shadows and the lighting across the page. From here on the ink is dark on a
    #    light page: a dark page's picture is turned around.
    if not light_page:
        gray, small = 1 - gray, 1 - small
    if sheet is not None:                # the desk is no part of the page: make it paper
        small = np.where(sheet, small, np.median(small[sheet]))
    behind = _closing(small, max(1, round(PAGE_SCALE * max(small.shape) / 2)))
    # 5. Even out the lighting: each pixel's ink is how much darker it is than the page behind
    #    it, as a share of that page's brightness (a shadow dims page and ink alike).
    page = np.clip(_resized(behind, width, height), 0, 1) if scale < 1 else behind
    ink = np.clip((page - gray) / np.maximum(page, 0.05), 0, 1)
    if sheet is not None:
        sheet = _resized_mask(sheet, width, height) if scale < 1 else sheet
        ink[~sheet] = 0
    # 6. Noise. Paper grain, camera noise and JPEG artefacts make the page vary; neighbouring
    #    pixels show by how much: their typical difference, across rows or down columns,
    #    whichever is smaller (the edges of strokes sway it less: in a tight crop of a 1 most
    #    pixels are on an edge across, few down). Ink fainter than five times that noise,
    #    than a tenth of the page, and than half of where Otsu's method splits the picture into
    #    page and ink, is page and becomes 0 as MNIST's background is. A lone pixel above it is
    #    a speck, since ink comes in strokes; long thin lines across the picture are a
    #    notebook's rules.
    typical = min((np.median(np.abs(np.diff(gray, axis=axis))) for axis in (0, 1)
                   if gray.shape[axis] > 1), default=0.0)
    noise = typical / 0.6745 / np.sqrt(2) / max(np.median(page), 0.05)
    ink = _without_rules(ink, noise)
    split = _otsu(ink[ink > 0.02]) if np.count_nonzero(ink > 0.02) > 1 else 1.0
    inked = _without_strays(_without_specks(ink > max(5 * noise, 0.1, split / 2)))
    steps = Preparation(gray, light_page, page, sheet, ink, inked, None)
    if not inked.any():
        return steps
    # 7. Crop to the ink's bounding box, then scale it so that its longer side is 20 pixels,
    #    keeping the aspect ratio. Resampling averages the many pixels of a stroke's edge into
    #    grey ones: MNIST's anti-aliasing. Its strokes peak at full ink (255), so do ours.
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    box = np.where(inked, ink, 0)[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    box = np.minimum(box / np.percentile(box[box > 0], 90), 1)   # full ink: most of a stroke
    scale = 20 / max(box.shape)
    small = _resized(box, max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.clip(small, 0, None)                 # Lanczos overshoots a little at sharp edges
    small /= small.max()                            # [0, 1], full ink at 1
    # 8. Paste it into 28 x 28 so that its centre of mass sits at the centre, pixel (14, 14),
    #    moving it by whole pixels as MNIST did.
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    top = round(14 - (ys * small).sum() / mass)
    left = round(14 - (xs * small).sum() / mass)
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top:top + small.shape[0], left:left + small.shape[1]] = small
    steps.digit = digit.ravel()
    return steps


def prepare_digit(brightness, background="auto"):
    """The 784 pixels MNIST would have made of a picture of one digit (float32 in [0, 1],
    light ink on black), or None when there is no ink to find; see prepare for the steps."""
    return prepare(brightness, background).digit


def read_brightness(path):
    """The picture in an image file as brightness: a 2-D float64 array, at most 2,000 pixels a
    side. A file that is not a picture Pillow can read, or a picture of more than 50 million
    pixels (a decompression bomb can claim billions in a few bytes), is refused with a
    DataError before it is decoded."""
    from PIL import Image, UnidentifiedImageError
    check_regular_file(path, expected="an image")
    too_big = (f"{path}: a picture of more than {MAX_PICTURE_PIXELS:,} pixels; expected a "
               f"photo or drawing of one digit (shrink it first)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise DataError(f"{too_big}; it is {width:,} x {height:,}")
                return _brightness(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(too_big) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise DataError(f"{path}: could not be read as an image ({error})") from None


def read_image(path, background="auto"):
    """An image file (PNG, JPEG, ...) of one digit as the 784 pixels MNIST would have made of
    it, exactly as --predict reads it; raises DataError when it cannot (see prepare).

    >>> digit = read_image("my_digit.png")                # doctest: +SKIP
    >>> net.predict(digit[None]).argmax()                 # doctest: +SKIP
    """
    digit = prepare(read_brightness(path), background).digit
    if digit is None:
        hint = ("try --background light or dark" if background == "auto"
                else "try another --background, or --background auto")
        raise DataError(f"{path}: found no ink, nothing that stands out from the page; "
                        f"expected a picture of one digit ({hint}, or crop the picture "
                        f"closer to the digit)")
    return digit


def predicts_images(paths):
    """--predict takes images (files or folders of them), or else one CSV file."""
    return len(paths) > 1 or os.path.isdir(paths[0]) or is_image_name(paths[0])


def image_files(paths):
    """The files --predict reads as pictures: each path given, and each file in a folder given
    (in name order). A folder's hidden files (dotfiles: .DS_Store, or the ._name.png a Mac
    leaves beside name.png) and its subfolders are passed over; its other files are all kept,
    pictures or not, so that read_to_predict names each one that is not. A folder without a
    single picture is refused at once: there would be nothing to predict."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(entry.path for entry in os.scandir(path)
                       if entry.is_file() and not entry.name.startswith("."))
        if not any(is_image_name(name) for name in found):
            raise DataError(f"{path}: a folder without pictures ({', '.join(IMAGE_SUFFIXES)})")
        files += found
    return files


def check_picture_name(path):
    """Refuse a file whose name is not a picture's (notes.txt in a folder of digits)."""
    if not is_image_name(path):
        suffix = os.path.splitext(path)[1]
        found = f"{suffix} is" if suffix else "a name without a suffix is"
        hint = ("; --predict reads a CSV file only when it is the only path given"
                if ".csv" in path.lower() else "")
        raise DataError(f"{path}: not a picture: {found} not one of "
                        f"{', '.join(IMAGE_SUFFIXES)}{hint}")


def read_to_predict(paths, background="auto"):
    """--predict's input, read and checked before any training: (CSV pixels or None, the
    paths of the pictures read, their prepared digits, the paths of the files refused).
    Every file is read: each one refused (not a picture, no ink, ...) is named in one line on
    standard error as it comes, and the others are kept."""
    if not paths:
        return None, [], [], []
    if not predicts_images(paths):
        return load_mnist_csv(paths[0], labelled=False)[0], [], [], []
    read, digits, refused = [], [], []
    for path in image_files(paths):
        try:
            check_picture_name(path)
            digits.append(read_image(path, background))
            read.append(path)
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            refused.append(path)
    return None, read, digits, refused


def refused_summary(refused, files):
    """The closing line of a run that refused files: how many, and which."""
    return f"refused {len(refused):,} of {_count(files, 'file')}: " + ", ".join(refused)


# ----------------------------------------------------------------------------------------------
# 3. Flag values, and flags that do not go together
# ----------------------------------------------------------------------------------------------
# Types for argparse: each reads one flag's value or refuses it in one line, as the parser does
# any mistake (instead of argparse's whole usage). check_flags then refuses, before any work,
# what could otherwise fail only after training.

def whole_number(minimum, most=None, why=""):
    """A whole number >= minimum (and <= most, if given: `why` says where that bound comes from)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"at most {most} {why}, got {text!r}")
        return value
    return parse


def bounded_number(low, low_included, high=None):
    """A finite number above low (or from low, if low_included), and <= high if given."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value < low if low_included else value <= low
        if not np.isfinite(value) or too_low or (high is not None and value > high):
            bounds = f"{'>=' if low_included else '>'} {low:g}"
            bounds += f" and <= {high:g}" if high else ""
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value
    return parse


def fraction(text):
    """A rate from 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 up to (not including) 1, "
                                         f"got {text!r}")
    return value


def layer_widths(parameters, most):
    """Hidden layer widths like 256,128 ('none' for no hidden layer), refused when the network
    would have more than `most` parameters (`parameters(widths)` counts them)."""
    def parse(text):
        if text.strip() in ("", "none"):
            return []
        try:
            widths = [int(part) for part in text.split(",")]
        except ValueError:
            widths = [0]
        if any(width < 1 for width in widths):
            raise argparse.ArgumentTypeError(f"expected layer widths like 256,128, got {text!r}")
        if parameters(widths) > most:
            raise argparse.ArgumentTypeError(f"layers {text} would have {parameters(widths):,} "
                                             f"parameters; at most {most:,} are allowed")
        return widths
    return parse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        """One line, exit status 2 (argparse's own prints the whole usage first)."""
        self.exit(2, f"error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds each option's default to its help, once: not when the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def check_flags(args):
    """Refuse, before any work starts, whatever could otherwise fail only after training."""
    if args.out and not args.predict:
        raise DataError("--out names the predictions file of --predict; give --predict PATH too")
    if args.history and args.load:
        raise DataError("--history needs training: a model given with --load has no history")
    if args.optimizer == "adam" and args.momentum is not None:
        raise DataError("--momentum is SGD's: Adam keeps its own running mean of the gradients")
    if args.patience and args.val_size == 0:
        raise DataError("--patience watches the validation loss: it needs --val-size above 0")
    destinations = [(flag, path) for flag, path in (
        ("--save", args.save), ("--history", args.history), ("--plot", args.plot),
        ("--out", args.out or ("predictions.csv" if args.predict and not predicts_images(
            args.predict) else None))) if path]
    inputs = _inputs(args)
    for number, (flag, path) in enumerate(destinations):
        _check_destination(flag, path)
        for input_flag, input_path in inputs:
            if _same_file(path, input_path):
                raise DataError(f"{flag} {path}: is {input_path}, an input ({input_flag}); "
                                f"writing there would destroy it: name another file")
        for other_flag, other in destinations[:number]:
            if _same_file(path, other):
                raise DataError(f"{flag} {path}: is also where {other_flag} writes")
    if args.plot:
        _require("matplotlib", "--plot", "matplotlib")
        _check_figure_format(args.plot)
    if args.predict and predicts_images(args.predict):
        _require("PIL", "--predict with images", "pillow")


def _inputs(args):
    """(flag, path) of every file the run may read: never to be written over."""
    inputs = [("--train", args.train), ("--test", args.test), ("--load", args.load)]
    for path in args.predict or []:
        inputs.append(("--predict", path))
        if os.path.isdir(path):
            inputs += [("--predict", entry.path) for entry in os.scandir(path)]
    return [(flag, path) for flag, path in inputs if path]


def _same_file(path, other):
    try:
        return os.path.samefile(path, other)      # links and other spellings of one file
    except OSError:                               # one of them does not exist (yet)
        return os.path.realpath(path) == os.path.realpath(other)


def _check_destination(flag, path):
    """A file the run will write: refused now, before any work, unless it can be written."""
    if os.path.isdir(path):
        raise DataError(f"{flag} {path}: is a folder, expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"{flag} {path}: there is no folder {folder}")
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise DataError(f"{flag} {path}: is a device, pipe or socket, expected a file to write")
    try:                                          # what writing it will do: a temporary file
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".nn-save-")   # beside it
        os.close(handle)
        os.remove(temporary)
    except OSError as error:
        raise DataError(f"{flag} {path}: cannot write in {folder} ({error.strerror})") from None


def _check_figure_format(path):
    """--plot's format is its file name's suffix: one that matplotlib writes."""
    from outputs import pyplot
    formats = pyplot().Figure().canvas.get_supported_filetypes()   # unregistered: nothing to close
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in formats:
        found = f".{suffix} files" if suffix else "a file without a suffix"
        raise DataError(f"--plot {path}: matplotlib cannot write {found}; expected a name "
                        f"ending in {', '.join('.' + name for name in sorted(formats))}")


def _require(module, needed_for, package):
    try:
        with warnings.catch_warnings():   # deprecation notes among a package's own imports
            warnings.simplefilter("ignore", DeprecationWarning)    # are not the user's
            importlib.import_module(module)
    except ImportError:
        raise DataError(f"{needed_for} needs {package}, which is not installed: "
                        f"pip install {package}") from None

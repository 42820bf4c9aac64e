"""Train nn.py's network on MNIST from CSV: train, validate after every epoch, then test.

    python train_mnist.py              # the full MNIST from data/, about 98.3% test accuracy
    python train_mnist.py --help       # every option with its default
    python train_mnist.py --load model.npz --predict my_digit.png    # read your own digit

Reads MNIST as CSV (plain or compressed, with or without a header row): one image a row, the
label (0-9) first or in a column named label, target, class, y or digit, and 784 pixels (0-255).

The file follows the data: reading CSV files (and images), building the network, training it,
reporting on the test set, drawing pictures, and last the command line that ties them together.
"""

import argparse
import bz2
import contextlib
import csv
import dataclasses
import gzip
import importlib
import itertools
import lzma
import os
import re
import stat
import sys
import tarfile
import time
import zipfile
import zlib
from typing import Optional

import numpy as np
import pandas as pd

from nn import (MAX_STORED_VALUES, SGD, Adam, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
                MaxPool2D, Network, ReLU, Reshape, Sigmoid, Softmax, Tanh, max_workers, one_hot)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAIN = os.path.join(HERE, "data", "mnist_train.csv.gz")
DEFAULT_TEST = os.path.join(HERE, "data", "mnist_test.csv.gz")
COLAB_TRAIN = "/content/sample_data/mnist_train_small.csv"
COLAB_TEST = "/content/sample_data/mnist_test.csv"
PIXELS = 784                     # 28 x 28
CLASSES = 10
CLASSIC_VALIDATION = 10_000      # MNIST's classic split: 50,000 to train, 10,000 to validate


class DataError(Exception):
    """A problem with an input file or flag, told to the user in one line (exit status 2)."""


def _count(number, noun):
    """'1 column', '785 columns'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _where(path, line=None, column=None):
    """'FILE, line L, column C': the start of an error message."""
    return str(path) + (f", line {line}" if line else "") + (f", column {column}" if column else "")


# ----------------------------------------------------------------------------------------------
# 1. Reading MNIST CSV files
# ----------------------------------------------------------------------------------------------

LABEL_NAMES = ("label", "target", "class", "y", "digit")   # a header's names for the label
LONGEST_FIRST_LINE = 65_536      # bytes: any sensible header of 785 names fits many times over
CHUNK_ROWS = 10_000              # rows parsed at a time, so pandas' working memory stays small

# The first bytes of a file say how it is compressed, whatever its name says.
MAGIC_NUMBERS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz",
                 b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x28\xb5\x2f\xfd": "zstd",
                 b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar", b"\x04\x22\x4d\x18": "lz4"}
DECOMPRESSORS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
               tarfile.TarError, UnicodeDecodeError)


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


def _first_line_cells(path):
    """The cells of the file's first line, read in bounded memory: a line too long to be an
    MNIST row or header is refused after 64 KB, however long it goes on."""
    with _open(path) as stream:
        raw = stream.readline(LONGEST_FIRST_LINE + 1)
    if not raw:
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in raw:
        raise DataError(f"{_where(path, 1)}: binary data, expected comma-separated numbers")
    if len(raw) > LONGEST_FIRST_LINE:
        raise DataError(f"{_where(path, 1)}: more than {raw.count(b','):,} columns in its first "
                        f"{LONGEST_FIRST_LINE:,} bytes, expected 785 columns")
    return _cells(raw)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


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
    # A header is a row of names: mostly not numbers. A first row of numbers with a bad cell
    # or two ("0a", "NA", an empty cell) is data, and the checks below refuse it.
    header = sum(not _is_number(cell) for cell in cells) > columns / 2
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
    found = "an empty cell" if not text else repr(text[:20])
    raise DataError(f"{_where(path, line, column + 1)}: found {found}, expected a number")


def _column_numbers(cells):
    """One column of a chunk as float64, NaN where a cell is not a number."""
    if cells.dtype.kind == "b":              # pandas reads True/False as booleans: not digits
        return np.full(len(cells), np.nan)
    return pd.to_numeric(cells, errors="coerce").to_numpy(np.float64, na_value=np.nan)


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
        text = _cells_of_line(path, line + row)[column].strip()    # as the file has it
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
            stream, header=None, names=range(layout.columns), skiprows=layout.first_line - 1,
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
# 2. Reading your own digits from images, prepared as MNIST's were
# ----------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
LUMA = np.array([0.299, 0.587, 0.114])     # brightness of red, green, blue (ITU-R 601, as Pillow)


def is_image_name(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def _resized(array, width, height):
    """A 2-D float array resampled to width x height with Pillow's Lanczos filter, which
    averages many pixels into one when shrinking (anti-aliasing) and interpolates smoothly
    when enlarging."""
    from PIL import Image
    image = Image.fromarray(array.astype(np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _brightness(image):
    """Every pixel's brightness as a float, from any mode: RGB, palette, 16-bit, with alpha..."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(image)      # a phone photo: turn it as the camera was held
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # See-through pixels show the page behind them. Drawing apps save dark strokes on a
        # transparent page, so put the image on a page that contrasts with what is drawn.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        colour, opacity = rgba[..., :3] @ LUMA, rgba[..., 3]
        drawn = opacity > 0.5
        page = 1.0 if not drawn.any() or colour[drawn].mean() < 0.5 else 0.0
        return opacity * colour + (1 - opacity) * page
    return np.asarray(image.convert("F"), dtype=np.float64)   # "F": floats, any bit depth


def _without_specks(inked):
    """Keep only the inked pixels that have an inked neighbour (of the 8 around them)."""
    padded = np.pad(inked, 1)
    height, width = inked.shape
    neighbours = sum(padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return inked & (neighbours > 0)


def prepare_digit(brightness, background="auto"):
    """Make a picture of one digit into the 784 pixels MNIST would have made of it.

    brightness: 2-D array (height, width), any scale. background: "auto" (decide from the
    picture), "light" (dark ink on a light page) or "dark" (light ink on a dark page).
    Returns float32 (784,) in [0, 1], light ink on black like MNIST, or None when there is no
    ink to find (a blank page, or nothing that stands out from its noise).
    """
    # 1. A phone photo has far more pixels than a 20-pixel digit needs: shrink it so its
    #    longer side is at most 1,000 pixels (faster, and averaging smooths the noise).
    height, width = brightness.shape
    if max(height, width) > 1000:
        scale = 1000 / max(height, width)
        brightness = _resized(brightness, max(1, round(width * scale)),
                              max(1, round(height * scale)))
    # 2. Stretch the picture's own darkest..lightest to 0..1, whatever its bit depth or exposure.
    low, high = brightness.min(), brightness.max()
    if high <= low:
        return None                                 # one flat shade: nothing drawn
    gray = (brightness - low) / (high - low)
    # 3. Ink and page. The border is nearly all page. If most of it is light, the page is light
    #    (paper, a drawing app) and the ink dark: turn the picture around, to MNIST's light ink
    #    on a dark page. --background overrides the guess; then only the border's pixels on the
    #    page's side of mid-grey are page (in a tight crop, ink may cover much of the border).
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    if background == "auto":
        light_page, page = np.median(border) > 0.5, border
    else:
        light_page = background == "light"
        page = border[border > 0.5] if light_page else border[border <= 0.5]
        if page.size == 0:                          # told so, against what the border shows
            page = np.array([1.0 if light_page else 0.0])
    shade = np.median(page)
    ink = np.clip(shade - gray if light_page else gray - shade, 0, None)
    # 4. Noise. Paper texture, camera noise and JPEG artefacts make the page vary, and the
    #    border shows by how much. Ink fainter than three times that (and than a fifth of the
    #    full contrast) is page, and becomes 0 as MNIST's background is; a lone pixel above it
    #    is a speck, since ink comes in strokes.
    spread = np.percentile(np.abs(page - shade), 90)
    inked = _without_specks(ink > max(3 * spread, 0.2))
    if not inked.any():
        return None
    # 5. Crop to the ink's bounding box, then scale it so that its longer side is 20 pixels,
    #    keeping the aspect ratio. Resampling averages the many pixels of a stroke's edge into
    #    grey ones: MNIST's anti-aliasing. Its strokes peak at full ink (255), so do ours.
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    box = np.where(inked, ink, 0)[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    scale = 20 / max(box.shape)
    small = _resized(box, max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.clip(small, 0, None)                 # Lanczos overshoots a little at sharp edges
    small /= small.max()                            # [0, 1], full ink at 1
    # 6. Paste it into 28 x 28 so that its centre of mass sits at the centre, pixel (14, 14),
    #    moving it by whole pixels as MNIST did.
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    top = round(14 - (ys * small).sum() / mass)
    left = round(14 - (xs * small).sum() / mass)
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top:top + small.shape[0], left:left + small.shape[1]] = small
    return digit.ravel()


def read_image(path, background="auto"):
    """An image file (PNG, JPEG, ...) of one digit as MNIST's 784 pixels; see prepare_digit."""
    from PIL import Image, UnidentifiedImageError
    check_regular_file(path, expected="an image")
    try:
        with Image.open(path) as image:
            brightness = _brightness(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: could not be read as an image ({error})") from None
    digit = prepare_digit(brightness, background)
    if digit is None:
        raise DataError(f"{path}: found no ink, nothing that stands out from the background; "
                        f"expected a picture of one digit")
    return digit


def predicts_images(paths):
    """--predict takes images (files or folders of them), or else one CSV file."""
    return len(paths) > 1 or os.path.isdir(paths[0]) or is_image_name(paths[0])


def image_files(paths):
    """The image files among --predict's paths, with each folder's images in name order."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(entry.path for entry in os.scandir(path)
                           if entry.is_file() and is_image_name(entry.name))
            if not found:
                raise DataError(f"{path}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif is_image_name(path):
            files.append(path)
        else:
            raise DataError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}); --predict "
                            f"takes one CSV file, or images and folders of images")
    return files


# ----------------------------------------------------------------------------------------------
# 3. Building the network
# ----------------------------------------------------------------------------------------------

MAX_PARAMETERS = MAX_STORED_VALUES   # what Network.load accepts, so a model saved can be loaded
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU}


def mlp_parameters(widths):
    """How many parameters a 784 -> widths -> 10 network of Dense layers has."""
    sizes = [PIXELS, *widths, CLASSES]
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def build_mlp(args):
    """Dense layers of the --hidden widths, each followed by the --activation (and Dropout
    with --dropout), then a Dense layer to the 10 digits and Softmax."""
    # He initialisation suits ReLU and its leaky kin; Glorot suits sigmoid and tanh (see Dense).
    init = "he" if args.activation in ("relu", "leaky_relu") else "glorot"
    layers, width = [], PIXELS
    for number, hidden in enumerate(args.hidden):
        layers += [Dense(width, hidden, seed=args.seed + number, init=init),
                   ACTIVATIONS[args.activation]()]
        if args.dropout:
            layers.append(Dropout(args.dropout))
        width = hidden
    layers += [Dense(width, CLASSES, seed=args.seed + len(args.hidden), init="glorot"), Softmax()]
    return Network(layers, loss=args.loss)


# ==============================================================================================
# The CNN of --model cnn: its architecture here, its training defaults in TRAINING_DEFAULTS.
# ==============================================================================================

def build_cnn(args):
    """A small LeNet-like network: a 5x5 convolution with 16 filters and a 3x3 one with 32,
    each followed by 2x2 max-pooling and ReLU (pooling first: max and ReLU commute, and ReLU
    then runs on a quarter of the numbers), then Dropout, a hidden Dense layer of 128, Dropout
    again, and Softmax over the 10 digits. --dropout, if given, replaces both dropout rates."""
    first, second = (args.dropout, args.dropout) if args.dropout else (0.25, 0.3)
    layers = [Reshape((1, 28, 28)),                     # MNIST's rows of 784 -> 1 x 28 x 28
              Conv2D(1, 16, 5, seed=args.seed), MaxPool2D(2), ReLU(),          # 16 x 12 x 12
              Conv2D(16, 32, 3, seed=args.seed + 1), MaxPool2D(2), ReLU(),     # 32 x 5 x 5
              Flatten(), Dropout(first),
              Dense(32 * 5 * 5, 128, seed=args.seed + 2), ReLU(), Dropout(second),
              Dense(128, CLASSES, seed=args.seed + 3, init="glorot"), Softmax()]
    return Network(layers, loss=args.loss)


# Each --model's training defaults; a flag given on the command line wins. The learning rate's
# default follows the model and the optimizer (LEARNING_RATES); SGD's momentum is 0.9.
TRAINING_DEFAULTS = {
    "mlp": {"epochs": 15, "batch_size": 128, "optimizer": "sgd", "lr_decay": 0.8, "workers": 1},
    "cnn": {"epochs": 8, "batch_size": 64, "optimizer": "adam", "lr_decay": 0.7, "workers": 2},
}
LEARNING_RATES = {"mlp": {"sgd": 0.1, "adam": 0.001}, "cnn": {"sgd": 0.1, "adam": 0.002}}
BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def describe(net):
    return " -> ".join(repr(layer) for layer in net.layers)


def load_model(path, say):
    """A model saved by --save, checked to map MNIST's 784 pixels to 10 probabilities."""
    check_regular_file(path, expected="a model file saved by --save")
    try:
        net = Network.load(path)
    except ValueError as error:              # (nn never unpickles; check_regular_file found it)
        raise DataError(f"{path}: not a model saved by --save ({error})") from None
    try:
        outputs = net.predict(np.zeros((1, PIXELS), dtype=np.float32))
    except ValueError:
        outputs = None
    if outputs is None or outputs.shape != (1, CLASSES):
        raise DataError(f"{path}: the model does not take MNIST's {PIXELS} pixels to {CLASSES} "
                        f"digit probabilities ({describe(net)})")
    say(f"model:  {describe(net)} loaded from {path}, {net.count_params():,} parameters")
    return net


# ----------------------------------------------------------------------------------------------
# 4. Training
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Split:
    """The training rows, split into examples to learn from and examples to validate on."""
    X: np.ndarray
    Y: np.ndarray
    validation: Optional[tuple]  # (X, Y) or None
    description: str


def split_training_rows(path, pixels, labels, val_size):
    if val_size is None:
        val_size = CLASSIC_VALIDATION if len(pixels) >= 60_000 else len(pixels) // 6
    if val_size >= len(pixels):
        raise DataError(f"--val-size {val_size} leaves no training examples out of "
                        f"{len(pixels)} rows in {path}")
    split = len(pixels) - val_size
    validation = (pixels[split:], one_hot(labels[split:], CLASSES)) if val_size else None
    return Split(pixels[:split], one_hot(labels[:split], CLASSES), validation,
                 f"{path}: {len(pixels):,} rows -> {split:,} train, {val_size:,} validation")


def expected_initial_loss(loss):
    """An untrained net gives each class about 1/10: a cross-entropy of ln 10, or a squared
    error of (0.9^2 + 9 * 0.1^2) / 10 = 0.09 per output."""
    if loss == "categorical_crossentropy":
        return f"ln {CLASSES} = {np.log(CLASSES):.4f}"
    return f"{((1 - 1 / CLASSES) ** 2 + (CLASSES - 1) / CLASSES ** 2) / CLASSES:.4f}"


def build_optimizer(args):
    if args.optimizer == "adam":
        return Adam(lr=args.lr, weight_decay=args.weight_decay, lr_decay=args.lr_decay)
    return SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
               lr_decay=args.lr_decay)


def train(args, data, say):
    """Build and train a network as the flags say; returns (network, history)."""
    net, optimizer = BUILDERS[args.model](args), build_optimizer(args)
    say(f"model:  {describe(net)}, {net.count_params():,} parameters, loss {args.loss}")
    say(f"train:  {args.epochs} epochs, batch {args.batch_size}, {optimizer!r}, "
        f"seed {args.seed}" + (f", early stopping with patience {args.patience}"
                               if args.patience else "")
        + (f", {args.workers} processes" if args.workers > 1 else ""))
    initial_loss, initial_accuracy = net.evaluate(data.X, data.Y)
    accuracy = "" if initial_accuracy is None else f", accuracy {initial_accuracy:.4f}"
    say(f"before training: loss {initial_loss:.4f} (about {expected_initial_loss(args.loss)} is "
        f"expected for an untrained {CLASSES}-class net){accuracy}")
    history = net.fit(data.X, data.Y, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=optimizer, validation_data=data.validation,
                      seed=args.seed, verbose=0 if args.quiet else 1, patience=args.patience,
                      workers=args.workers)
    if args.patience:
        stopped, best = history["stopped_epoch"], history["best_epoch"]
        said = (f"stopped after epoch {stopped} (patience {args.patience})" if stopped
                else f"ran all {args.epochs} epochs")
        say(f"early stopping: {said}; restored the weights of epoch {best}, the best on "
            f"validation")
    return net, history


def write_history(history, path, say):
    """The per-epoch lists of the history (loss, accuracy, ...) as CSV, one row an epoch."""
    columns = {key: values for key, values in history.items() if isinstance(values, list)}
    epochs = pd.RangeIndex(1, len(history["loss"]) + 1, name="epoch")
    pd.DataFrame(columns, index=epochs).to_csv(path)
    say(f"wrote the history to {path}")


# ----------------------------------------------------------------------------------------------
# 5. Reporting: the test set, and predictions for new images
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Scored:
    """Labelled images and the network's probabilities for them (the test set, once tested)."""
    pixels: np.ndarray           # (n, 784) in [0, 1]
    labels: np.ndarray           # (n,) digits
    probabilities: np.ndarray    # (n, 10)

    def mistakes(self):
        """Indices of the misclassified images, the most confidently wrong first."""
        predicted = self.probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != self.labels)
        return wrong[np.argsort(-self.probabilities[wrong, predicted[wrong]], kind="stable")]


def confusion_matrix(true_labels, predicted_labels):
    """10x10 table: rows are the true digits, columns what the network said."""
    digits = pd.CategoricalDtype(range(CLASSES))
    return pd.crosstab(pd.Series(true_labels, name="true").astype(digits),
                       pd.Series(predicted_labels, name="predicted").astype(digits),
                       dropna=False)


def report_test(net, pixels, labels, say):
    """Print test accuracy, loss, confusion matrix and per-digit accuracy; returns Scored."""
    probabilities = net.predict(pixels)
    test_loss = net.loss(one_hot(labels, CLASSES), probabilities)   # no second pass
    predicted = probabilities.argmax(axis=1)
    print(f"test accuracy: {100 * np.mean(predicted == labels):.2f}% (test loss {test_loss:.4f}, "
          f"{len(pixels):,} images)")
    matrix = confusion_matrix(labels, predicted)
    say("\nconfusion matrix (rows: true digit, columns: predicted digit)")
    say(matrix.to_string())
    per_digit = np.diag(matrix) / np.maximum(matrix.sum(axis=1).to_numpy(), 1)
    say("\nper-digit accuracy: " + "  ".join(f"{digit}: {100 * accuracy:.1f}%"
                                             for digit, accuracy in enumerate(per_digit)))
    return Scored(pixels, labels, probabilities)


def show_mistakes(scored, count, say):
    wrong = scored.mistakes()[:count]
    if len(wrong):
        say(f"\n{len(wrong)} of the test digits it got wrong, the most confident mistakes first:")
    for index in wrong:
        guess = int(scored.probabilities[index].argmax())
        say(f"\ntest image {index}: true {scored.labels[index]} -> predicted {guess} "
            f"(confidence {100 * scored.probabilities[index, guess]:.1f}%)")
        say(text_art(scored.pixels[index]))


def write_kaggle_predictions(net, pixels, path, out, say):
    """Kaggle's submission format: ImageId (from 1), Label."""
    labels = net.predict(pixels).argmax(axis=1)
    table = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})
    table.to_csv(out, index=False)
    say(f"wrote {len(labels):,} predictions of {path} to {out} (ImageId,Label)")


def predict_images(net, paths, digits, out, say):
    """For each image: the digit, its probability and the next two guesses (printed even
    under --quiet: they are the result), then the 28x28 input the network saw."""
    probabilities = net.predict(np.stack(digits))
    for path, digit, p in zip(paths, digits, probabilities):
        first, second, third = np.argsort(-p, kind="stable")[:3]
        print(f"{path}: {first} ({100 * p[first]:.1f}%), then {second} ({100 * p[second]:.1f}%), "
              f"{third} ({100 * p[third]:.1f}%)")
        say(text_art(digit))
    if out:
        table = pd.DataFrame({"path": paths, "label": probabilities.argmax(axis=1),
                              "probability": probabilities.max(axis=1)})
        table.to_csv(out, index=False, float_format="%.4f")
        say(f"wrote {len(paths):,} predictions to {out} (path,label,probability)")


# ----------------------------------------------------------------------------------------------
# 6. Pictures: digits as text, and a figure of what the network learned
# ----------------------------------------------------------------------------------------------

SHADES = " .:-=+*#%@"            # from blank to full ink


def text_art(image):
    """A 28x28 image with values in [0, 1] as 28 framed lines of text, two characters per
    pixel (characters are about twice as tall as they are wide)."""
    levels = np.minimum((image.reshape(28, 28) * len(SHADES)).astype(int), len(SHADES) - 1)
    rows = ["|" + "".join(SHADES[level] * 2 for level in row) + "|" for row in levels]
    edge = "+" + "-" * 56 + "+"
    return "\n".join([edge, *rows, edge])


def _first_weights(net):
    """The first array of the first layer with parameters: a Dense layer's weights (784, units)
    or a convolution's (filters, channels, k, k)."""
    return next((layer.parameters()[0][0] for layer in net.layers if layer.parameters()), None)


def plot(path, net, say, history=None, scored=None):
    """One figure: learning curves, misclassified test digits, first-layer weights."""
    import matplotlib
    matplotlib.use("Agg")                # draw to a file; there may be no screen
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    mistake_rows, weight_rows, columns = 2, 2, 8
    figure = plt.figure(figsize=(12, 11), layout="constrained")
    top, middle, bottom = figure.subfigures(3, 1, height_ratios=[1.1, 1, 1])

    curves = top.subplots(1, 2)
    keys = [key for key in ("loss", "accuracy") if history and history.get(key)]
    for axes, key in itertools.zip_longest(curves, keys):
        if key is None:
            axes.text(0.5, 0.5, "no learning curve:\nthe model was loaded, not trained"
                      if not history else "no accuracy for this loss", ha="center", va="center")
            axes.axis("off")
            continue
        epochs = np.arange(1, len(history[key]) + 1)
        axes.plot(epochs, history[key], "o-", label=f"train {key}")
        if history.get(f"val_{key}"):
            axes.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axes.set_title(key)
        axes.grid(alpha=0.3)
        axes.legend()

    wrong = scored.mistakes() if scored is not None else []
    middle.suptitle(f"test digits it gets wrong, most confident first: true → predicted "
                    f"(confidence); {len(wrong)} in all")
    for slot, axes in enumerate(middle.subplots(mistake_rows, columns).flat):
        axes.axis("off")
        if slot < len(wrong):
            index = wrong[slot]
            guess = int(scored.probabilities[index].argmax())
            axes.imshow(scored.pixels[index].reshape(28, 28), cmap="gray_r")
            axes.set_title(f"{scored.labels[index]} → {guess} "
                           f"({100 * scored.probabilities[index, guess]:.0f}%)", fontsize=10)

    weights = _first_weights(net)
    explain = "red: ink there raises the output, blue: lowers it"
    if weights.ndim == 4:                    # a convolution's (filters, channels, k, k)
        images, name = weights[:, 0], "filter"
        bottom.suptitle(f"the first convolution's {len(images)} filters, "
                        f"{images.shape[1]}×{images.shape[2]} ({explain})")
    else:                                    # a Dense layer's (784, units): a 28×28 image a unit
        images, name = weights.T.reshape(-1, 28, 28), "unit"
        bottom.suptitle(f"first-layer weights of hidden units as 28×28 images ({explain})\nthe "
                        f"border stays near its random start: those pixels are blank in nearly "
                        f"every image, so their weights get almost no gradient")
    for number, axes in enumerate(bottom.subplots(weight_rows, columns).flat):
        axes.axis("off")
        if number < len(images):
            limit = np.abs(images[number]).max()
            axes.imshow(images[number], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_title(f"{name} {number}", fontsize=9)

    figure.savefig(path, dpi=72)
    plt.close(figure)
    say(f"saved the figure to {path}")


# ----------------------------------------------------------------------------------------------
# 7. The command line
# ----------------------------------------------------------------------------------------------

def _whole_number(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def _workers(text):
    value = _whole_number(1)(text)
    if value > max_workers():
        raise argparse.ArgumentTypeError(f"at most {max_workers()} here (the cores this "
                                         f"process may use, on Linux; 1 on other systems), "
                                         f"got {text!r}")
    return value


def _number(low, low_included, high=None):
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


def _widths(text):
    if text.strip() in ("", "none"):
        return []
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        widths = [0]
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"expected layer widths like 256,128, got {text!r}")
    if mlp_parameters(widths) > MAX_PARAMETERS:
        raise argparse.ArgumentTypeError(f"layers {text} would have {mlp_parameters(widths):,} "
                                         f"parameters; at most {MAX_PARAMETERS:,} are allowed")
    return widths


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 up to (not including) 1, "
                                         f"got {text!r}")
    return value


def _defaults_text(name):
    """' (default: X)' for a training flag, naming each --model's default where they differ."""
    mlp, cnn = TRAINING_DEFAULTS["mlp"][name], TRAINING_DEFAULTS["cnn"][name]
    return f" (default: {mlp})" if mlp == cnn else f" (default: {mlp}; {cnn} with --model cnn)"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, exit status 2 (argparse's own prints the whole usage first)."""
        self.exit(2, f"error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds each option's default to its help, once: not when the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    parser = _Parser(
        description="Train a neural network (nn.py) on MNIST CSV files: train, validate, test.",
        formatter_class=_HelpFormatter, allow_abbrev=False)
    data = parser.add_argument_group("data")
    data.add_argument("--train", default=DEFAULT_TRAIN, metavar="PATH",
                      help="training CSV (.csv or compressed, with or without header); if "
                           "this and --test are missing, Colab's sample_data is used")
    data.add_argument("--test", default=DEFAULT_TEST, metavar="PATH", help="test CSV")
    data.add_argument("--limit", type=_whole_number(1), metavar="N",
                      help="use only the first N rows of the training file (quick runs)")
    data.add_argument("--val-size", type=_whole_number(0), metavar="N",
                      help="examples held out from the end of the training rows for per-epoch "
                           "validation; 0 for none (default: 10,000, MNIST's classic split, or a "
                           "sixth of the rows when there are fewer than 60,000)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(BUILDERS), default="mlp",
                       help="mlp: Dense layers (--hidden, --activation); cnn: a small "
                            "convolutional network")
    model.add_argument("--hidden", type=_widths, default="256,128", metavar="WIDTHS",
                       help="the mlp's hidden layer widths, comma-separated ('none' for no "
                            "hidden layer)")
    model.add_argument("--activation", choices=list(ACTIVATIONS), default="relu",
                       help="activation of the mlp's hidden layers")
    model.add_argument("--dropout", type=_rate, default=0.0, metavar="RATE",
                       help="dropout after each hidden activation: the fraction of its outputs "
                            "zeroed at random in each training step (0: none)")
    model.add_argument("--loss", choices=["categorical_crossentropy", "mse"],
                       default="categorical_crossentropy", help="loss to minimise")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizer", choices=["sgd", "adam"],
                          help="sgd or adam" + _defaults_text("optimizer"))
    training.add_argument("--epochs", type=_whole_number(1),
                          help="passes over the data" + _defaults_text("epochs"))
    training.add_argument("--batch-size", type=_whole_number(1),
                          help="examples per step" + _defaults_text("batch_size"))
    training.add_argument("--lr", type=_number(0, False),
                          help="learning rate (> 0; default: "
                               + "; ".join(f"{lr:g} for {name}" + ("" if model == "mlp"
                                                                    else f" with --model {model}")
                                           for model, rates in LEARNING_RATES.items()
                                           for name, lr in rates.items()) + ")")
    training.add_argument("--momentum", type=_number(0, True),
                          help="SGD's momentum (>= 0; default: 0.9); Adam has its own")
    training.add_argument("--weight-decay", type=_number(0, True), default=0.0,
                          help="L2 weight decay (>= 0)")
    training.add_argument("--lr-decay", type=_number(0, False, 1),
                          help="multiply the learning rate by this after every epoch (0 < x <= 1)"
                               + _defaults_text("lr_decay"))
    training.add_argument("--patience", type=_whole_number(1), metavar="N",
                          help="early stopping: stop once the validation loss has not improved "
                               "for N epochs, and keep the weights of the best epoch")
    training.add_argument("--workers", type=_workers, metavar="N",
                          help="processes that share each batch (nn's fit(workers=N), on "
                               "Linux): with 2 on 2 cores the CNN's run takes 0.75 of the time, "
                               "the MLP's longer" + _defaults_text("workers")
                               + ", at most the cores")
    training.add_argument("--seed", type=_whole_number(0), default=0,
                          help="seed for the initial weights, the shuffling and dropout")
    output = parser.add_argument_group("output")
    output.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    output.add_argument("--history", metavar="PATH", help="write the per-epoch history as CSV")
    output.add_argument("--quiet", action="store_true",
                        help="print only the results: the test accuracy, or the predictions")
    output.add_argument("--show-mistakes", type=_whole_number(0), default=2, metavar="N",
                        help="draw N misclassified test digits as text art (0: none)")
    output.add_argument("--plot", metavar="PATH.png",
                        help="save a figure: learning curves, misclassified test digits and "
                             "first-layer weights or filters (needs matplotlib)")
    use = parser.add_argument_group("using a saved model")
    use.add_argument("--load", metavar="PATH",
                     help="skip training: evaluate the model saved at PATH (by --save) on --test; "
                          "the model and training flags are then ignored")
    use.add_argument("--predict", nargs="+", metavar="PATH",
                     help="images of digits (.png, .jpg, ...; files or folders), or one CSV of "
                          "784 pixel columns (header or not; a label column is ignored) such as "
                          "Kaggle's test.csv; with --load, only this")
    use.add_argument("--background", choices=["auto", "light", "dark"], default="auto",
                     help="the images' background: light (dark ink on paper), dark (light ink, "
                          "like MNIST) or auto (decided from each image's border)")
    use.add_argument("--out", metavar="PATH",
                     help="where --predict writes its predictions: ImageId,Label rows for a CSV "
                          "(predictions.csv if not given), path,label,probability rows for "
                          "images (only if given)")
    return _with_defaults(parser.parse_args(argv))


def _with_defaults(args):
    """Fill in the defaults that depend on other flags: the --model's training defaults, then
    the optimizer's learning rate and SGD's momentum."""
    for name, value in TRAINING_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.workers = min(args.workers, max_workers())   # a default this machine can run
    if args.lr is None:
        args.lr = LEARNING_RATES[args.model][args.optimizer]
    if args.momentum is None and args.optimizer == "sgd":
        args.momentum = 0.9
    return args


def choose_files(args, say):
    """The --train/--test paths, or Colab's sample_data when the defaults are missing."""
    defaults_missing = not os.path.exists(args.train) and not os.path.exists(args.test)
    if (args.train, args.test) == (DEFAULT_TRAIN, DEFAULT_TEST) and defaults_missing \
            and os.path.exists(COLAB_TRAIN) and os.path.exists(COLAB_TEST):
        say(f"{DEFAULT_TRAIN} is missing: using Colab's {COLAB_TRAIN} and {COLAB_TEST}")
        return COLAB_TRAIN, COLAB_TEST
    return args.train, args.test


def _require(module, needed_for, package):
    try:
        importlib.import_module(module)
    except ImportError:
        raise DataError(f"{needed_for} needs {package}, which is not installed: "
                        f"pip install {package}") from None


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
    for flag, path in (("--save", args.save), ("--history", args.history),
                       ("--out", args.out), ("--plot", args.plot)):
        if not path:
            continue
        if os.path.isdir(path):
            raise DataError(f"{flag} {path}: is a folder, expected a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DataError(f"{flag} {path}: there is no folder {folder}")
    if args.plot:
        _require("matplotlib", "--plot", "matplotlib")
    if args.predict and predicts_images(args.predict):
        _require("PIL", "--predict with images", "pillow")


def read_prediction_inputs(args):
    """--predict's input, read and checked before any training: (CSV pixels or None, image
    paths, their prepared digits)."""
    if not args.predict:
        return None, [], []
    if not predicts_images(args.predict):
        return load_mnist_csv(args.predict[0], labelled=False)[0], [], []
    paths = image_files(args.predict)
    return None, paths, [read_image(path, args.background) for path in paths]


def run(args):
    started = time.perf_counter()
    say = (lambda *parts: None) if args.quiet else print
    check_flags(args)
    net = load_model(args.load, say) if args.load else None
    csv_pixels, image_paths, digits = read_prediction_inputs(args)
    predict_only = bool(args.load and args.predict)     # Kaggle: a saved model, new images
    train_path, test_path = choose_files(args, say)
    data = None
    if net is None:
        data = split_training_rows(train_path, *load_mnist_csv(train_path, nrows=args.limit),
                                   args.val_size)
    test = None if predict_only else load_mnist_csv(test_path)

    history = scored = None
    if net is None:
        say(f"data:   {data.description}; {len(test[0]):,} test rows")
        net, history = train(args, data, say)
    if test is not None:
        scored = report_test(net, *test, say)
        show_mistakes(scored, args.show_mistakes, say)
    if csv_pixels is not None:
        write_kaggle_predictions(net, csv_pixels, args.predict[0], args.out or "predictions.csv",
                                 say)
    if digits:
        predict_images(net, image_paths, digits, args.out, say)
    if args.save:
        net.save(args.save)
        say(f"saved the model to {args.save}")
    if args.history:
        write_history(history, args.history, say)
    if args.plot:
        plot(args.plot, net, say, history=history, scored=scored)
    say(f"total time: {time.perf_counter() - started:.1f}s")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:             # e.g. the disk is full when saving
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

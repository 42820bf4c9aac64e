"""Train nn.py's network on MNIST from CSV: train, validate after every epoch, then test.

    python train_mnist.py              # the full MNIST from data/, about 98.3% test accuracy
    python train_mnist.py --help       # every option with its default

Reads MNIST as CSV (plain or compressed, with or without a header row): one image a row, the
label (0-9) in the column named "label" or else the first column, then 784 pixels (0-255).
"""

import argparse
import contextlib
import lzma
import os
import sys
import time
import zipfile
import zlib

import numpy as np
import pandas as pd

from nn import SGD, Dense, Network, ReLU, Sigmoid, Softmax, one_hot

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAIN = os.path.join(HERE, "data", "mnist_train.csv.gz")
DEFAULT_TEST = os.path.join(HERE, "data", "mnist_test.csv.gz")
COLAB_TRAIN = "/content/sample_data/mnist_train_small.csv"
COLAB_TEST = "/content/sample_data/mnist_test.csv"
PIXELS = 784                     # 28 x 28
CLASSES = 10
CLASSIC_VALIDATION = 10_000      # MNIST's classic split: 50,000 to train, 10,000 to validate


class DataError(Exception):
    """A problem with an input file, told to the user in one line (exit status 2)."""


# ----------------------------------------------------------------------------------------------
# Reading MNIST CSV files
# ----------------------------------------------------------------------------------------------

def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def _reading(path):
    """Turn every way a file can fail to read into a DataError that names it."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        detail = str(error).strip().splitlines()[-1]
        raise DataError(f"{path}: not a well-formed CSV table ({detail})") from None
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError,
            zipfile.BadZipFile) as error:
        # damaged or truncated compression, unreadable files, binary data
        raise DataError(f"{path}: could not be read ({type(error).__name__}: {error})") from None


def _read(path, **options):
    with _reading(path):
        return pd.read_csv(path, skip_blank_lines=False, **options)


def _float32_chunks(path, header, nrows):
    """The table as float32 arrays of up to 10,000 rows each, read one chunk at a time so
    that pandas' own working memory stays small. Unlike a small integer type, which some
    pandas versions silently wrap (300 -> 44 as uint8), a float keeps a bad value visible for
    the range checks; every whole number up to 2^24 is exact, and empty cells become NaN.
    A cell that is not a number raises ValueError."""
    with _reading(path):
        for chunk in pd.read_csv(path, header=header, nrows=nrows, dtype=np.float32,
                                 chunksize=10_000, skip_blank_lines=False):
            yield chunk.to_numpy()


def _read_slowly(path, header, nrows, first_line):
    """Read letting pandas infer each column's type, for files the fast path refused; name
    the first cell that is empty or not a number, else return the values as float32."""
    table = _read(path, header=header, nrows=nrows)
    for column_number, column in enumerate(table.columns):
        cells = table[column]
        if cells.dtype.kind in "iuf" and not cells.isna().any():
            continue                     # a clean numeric column
        numbers = pd.to_numeric(cells, errors="coerce")
        bad = numbers.isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            cell = cells.iloc[row]
            what = "an empty cell" if pd.isna(cell) or not str(cell).strip() else f"{str(cell)[:20]!r}"
            raise DataError(f"{path}, line {row + first_line}, column {column_number + 1}: "
                            f"found {what}, expected a number")
    return table.to_numpy(dtype=np.float32)


def _checked_split(path, chunks, names, labelled, first_line):
    """Check every chunk of values and split it into labels and pixels. The checked pixels
    are kept as bytes (a quarter of float32's memory) until the end, where they become one
    float32 array with rows contiguous in memory, for fast batches."""
    label_column = names.index("label") if "label" in names else 0
    expected = "785 columns (a label, then 784 pixels)"
    label_parts, pixel_parts, rows_done = [], [], 0
    for values in chunks:
        line = first_line + rows_done    # the file line of values[0]
        rows_done += len(values)
        columns = values.shape[1]
        if labelled and columns != PIXELS + 1:
            raise DataError(f"{path}: expected {expected}, found {columns} columns")
        if not labelled and columns not in (PIXELS, PIXELS + 1):
            raise DataError(f"{path}: expected 784 pixel columns (or {expected}), "
                            f"found {columns} columns")
        empty = np.isnan(values)
        if empty.any():
            row, column = (int(i) for i in np.argwhere(empty)[0])
            raise DataError(f"{path}, line {line + row}, column {column + 1}: "
                            f"found an empty cell, expected a number")
        if columns == PIXELS + 1:
            labels = values[:, label_column]
            pixels = np.delete(values, label_column, axis=1) if label_column else values[:, 1:]
        else:
            labels, pixels = None, values
        if labelled:
            bad = (labels < 0) | (labels >= CLASSES) | (labels != np.round(labels))
            if bad.any():
                row = int(np.argmax(bad))
                where = "column named label" if "label" in names else "first column"
                raise DataError(f"{path}, line {line + row}: label {labels[row]:g} is not a "
                                f"digit 0-9 (expected the label in the {where})")
            label_parts.append(labels.astype(np.int64))
        outside = (pixels < 0) | (pixels > 255)
        bad = outside | (pixels != np.round(pixels))
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            value = pixels[row, column]
            problem = "is outside 0-255" if outside[row, column] else "is not a whole number 0-255"
            raise DataError(f"{path}, line {line + row}: pixel value {value:g} {problem}")
        pixel_parts.append(np.ascontiguousarray(pixels, dtype=np.uint8))   # exact: checked above
    if rows_done == 0:
        raise DataError(f"{path}: has no data rows")
    labels = np.concatenate(label_parts) if labelled else None
    return labels, np.concatenate(pixel_parts, dtype=np.float32)


def load_mnist_csv(path, nrows=None, labelled=True):
    """Read an MNIST CSV file; returns (pixels, labels).

    pixels: float32 (rows, 784) scaled to [0, 1], rows contiguous in memory.
    labels: int64 (rows,) in 0..9, or None when labelled=False (a file to predict; a label
    column, if present, is then ignored).
    Raises DataError naming the file, the line where it can, and what was expected.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a CSV file")
    # A header row is a first line with something that is not a number in it (Kaggle's
    # "label,pixel0,...", or "label,1x1,..."); headerless files (Colab's) keep their first example.
    first = _read(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    has_header = not all(_is_number(cell) for cell in first.iloc[0])
    header = 0 if has_header else None
    first_line = 2 if has_header else 1  # the file line that holds the first example
    names = [str(name).strip().lower() for name in first.iloc[0]] if has_header else []
    try:
        labels, pixels = _checked_split(path, _float32_chunks(path, header, nrows), names,
                                        labelled, first_line)
    except ValueError:                   # a cell that is not a number: find and name it
        table = _read_slowly(path, header, nrows, first_line)
        labels, pixels = _checked_split(path, [table], names, labelled, first_line)
    pixels /= 255                        # scale to [0, 1], in place
    return pixels, labels


# ----------------------------------------------------------------------------------------------
# The command line
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


def _number(low, low_included, high=None):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value < low if low_included else value <= low
        if not np.isfinite(value) or too_low or (high is not None and value > high):
            bounds = f"{'>=' if low_included else '>'} {low:g}" + (f" and <= {high:g}" if high else "")
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
    return widths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a neural network (nn.py) on MNIST CSV files: train, validate, test.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--train", default=DEFAULT_TRAIN, metavar="PATH",
                      help="training CSV (.csv or compressed, with or without header); if the "
                           "default is missing but Colab's sample_data is there, that is used")
    data.add_argument("--test", default=DEFAULT_TEST, metavar="PATH", help="test CSV")
    data.add_argument("--limit", type=_whole_number(1), metavar="N",
                      help="use only the first N rows of the training file (quick runs)")
    data.add_argument("--val-size", type=_whole_number(0), metavar="N",
                      help="examples held out from the end of the training rows for per-epoch "
                           "validation; 0 for none (default: 10,000, MNIST's classic split, or a "
                           "sixth of the rows when there are fewer than 60,000)")
    model = parser.add_argument_group("model")
    model.add_argument("--hidden", type=_widths, default="256,128", metavar="WIDTHS",
                       help="hidden layer widths, comma-separated ('none' for no hidden layer)")
    model.add_argument("--activation", choices=["relu", "sigmoid"], default="relu",
                       help="activation of the hidden layers")
    model.add_argument("--loss", choices=["categorical_crossentropy", "mse"],
                       default="categorical_crossentropy", help="loss to minimise")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=_whole_number(1), default=15, help="passes over the data")
    training.add_argument("--batch-size", type=_whole_number(1), default=128, help="examples per step")
    training.add_argument("--lr", type=_number(0, False), default=0.1, help="learning rate (> 0)")
    training.add_argument("--momentum", type=_number(0, True), default=0.9, help="SGD momentum (>= 0)")
    training.add_argument("--weight-decay", type=_number(0, True), default=0.0,
                          help="L2 weight decay (>= 0)")
    training.add_argument("--lr-decay", type=_number(0, False, 1), default=0.8,
                          help="multiply the learning rate by this after every epoch (0 < x <= 1)")
    training.add_argument("--seed", type=int, default=0,
                          help="seed for the initial weights and the shuffling")
    output = parser.add_argument_group("output")
    output.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    output.add_argument("--history", metavar="PATH", help="write the per-epoch history as CSV")
    output.add_argument("--quiet", action="store_true",
                        help="print only the final test accuracy")
    output.add_argument("--show-mistakes", type=_whole_number(0), default=2, metavar="N",
                        help="draw N misclassified test digits as text art (0: none)")
    output.add_argument("--plot", metavar="PATH.png",
                        help="save a figure: learning curves, misclassified test digits and "
                             "first-layer weights (needs matplotlib)")
    use = parser.add_argument_group("using a saved model")
    use.add_argument("--load", metavar="PATH",
                     help="skip training: evaluate the model saved at PATH (by --save) on --test; "
                          "the model and training flags are then ignored")
    use.add_argument("--predict", metavar="PATH",
                     help="predict the digits of a CSV of 784 pixel columns (header or not; a "
                          "label column is ignored), e.g. Kaggle's test.csv; with --load, only this")
    use.add_argument("--out", metavar="PATH",
                     help="where --predict writes ImageId,Label rows (default: predictions.csv)")
    return parser.parse_args(argv)


def build_network(args):
    hidden_activation = {"relu": ReLU, "sigmoid": Sigmoid}[args.activation]
    # He initialisation suits ReLU; Glorot suits sigmoid (see Dense in nn.py).
    init = "he" if args.activation == "relu" else "glorot"
    layers, width = [], PIXELS
    for number, hidden in enumerate(args.hidden):
        layers += [Dense(width, hidden, seed=args.seed + number, init=init), hidden_activation()]
        width = hidden
    layers += [Dense(width, CLASSES, seed=args.seed + len(args.hidden), init="glorot"), Softmax()]
    return Network(layers, loss=args.loss)


def describe(net):
    parts = [str(net.n_inputs)]
    for layer in net.layers:
        if isinstance(layer, Dense):
            parts.append(str(layer.n_out))
        else:
            parts[-1] += f" {type(layer).__name__}"
    return " -> ".join(parts)


def choose_files(args, say):
    """The --train/--test paths, or Colab's sample_data when the defaults are missing."""
    defaults_missing = not os.path.exists(args.train) and not os.path.exists(args.test)
    if (args.train, args.test) == (DEFAULT_TRAIN, DEFAULT_TEST) and defaults_missing \
            and os.path.exists(COLAB_TRAIN) and os.path.exists(COLAB_TEST):
        say(f"{DEFAULT_TRAIN} is missing: using Colab's {COLAB_TRAIN} and {COLAB_TEST}")
        return COLAB_TRAIN, COLAB_TEST
    return args.train, args.test


def train(args, train_path, test_rows, say):
    """Build and train a network as the flags say; returns (network, history)."""
    pixels, labels = load_mnist_csv(train_path, nrows=args.limit)
    val_size = args.val_size
    if val_size is None:
        val_size = CLASSIC_VALIDATION if len(pixels) >= 60_000 else len(pixels) // 6
    if val_size >= len(pixels):
        raise DataError(f"--val-size {val_size} leaves no training examples out of "
                        f"{len(pixels)} rows in {train_path}")
    split = len(pixels) - val_size
    X, Y = pixels[:split], one_hot(labels[:split], CLASSES)
    validation = (pixels[split:], one_hot(labels[split:], CLASSES)) if val_size else None

    net = build_network(args)
    optimizer = SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                    lr_decay=args.lr_decay)
    say(f"data:   {train_path}: {len(pixels):,} rows -> {split:,} train, {val_size:,} validation"
        + (f"; {test_rows:,} test rows" if test_rows else ""))
    say(f"model:  {describe(net)}, {net.count_params():,} parameters, loss {args.loss}")
    say(f"train:  {args.epochs} epochs, batch {args.batch_size}, SGD(lr={args.lr:g}, "
        f"momentum={args.momentum:g}, weight_decay={args.weight_decay:g}, "
        f"lr_decay={args.lr_decay:g}), seed {args.seed}")
    initial_loss, initial_accuracy = net.evaluate(X, Y)
    # An untrained net gives each class about 1/10: a cross-entropy of ln 10, or a squared
    # error of (0.9^2 + 9 * 0.1^2) / 10 = 0.09 per output.
    expected = (f"ln {CLASSES} = {np.log(CLASSES):.4f}" if args.loss == "categorical_crossentropy"
                else f"{((1 - 1 / CLASSES) ** 2 + (CLASSES - 1) / CLASSES ** 2) / CLASSES:.4f}")
    say(f"before training: loss {initial_loss:.4f} (about {expected} is expected for an untrained "
        f"{CLASSES}-class net), accuracy {initial_accuracy:.4f}")
    history = net.fit(X, Y, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                      validation_data=validation, seed=args.seed, verbose=0 if args.quiet else 1)
    return net, history


def load_model(path, say):
    try:
        net = Network.load(path)
    except (FileNotFoundError, ValueError) as error:
        raise DataError(str(error)) from None
    if (net.n_inputs, net.n_outputs) != (PIXELS, CLASSES):
        raise DataError(f"{path}: the model takes {net.n_inputs} inputs and gives {net.n_outputs} "
                        f"outputs; MNIST needs {PIXELS} and {CLASSES}")
    say(f"model:  {describe(net)} loaded from {path}, {net.count_params():,} parameters")
    return net


def confusion_matrix(true_labels, predicted_labels):
    """10x10 table: rows are the true digits, columns what the network said."""
    digits = pd.CategoricalDtype(range(CLASSES))
    return pd.crosstab(pd.Series(true_labels, name="true").astype(digits),
                       pd.Series(predicted_labels, name="predicted").astype(digits),
                       dropna=False)


def report_test(net, pixels, labels, say):
    """Print test accuracy, loss, confusion matrix and per-digit accuracy; returns probabilities."""
    probabilities = net.predict(pixels)
    test_loss = net.loss(one_hot(labels, CLASSES), probabilities)
    predicted = probabilities.argmax(axis=1)
    print(f"test accuracy: {100 * np.mean(predicted == labels):.2f}% (test loss {test_loss:.4f}, "
          f"{len(pixels):,} images)")
    matrix = confusion_matrix(labels, predicted)
    say("\nconfusion matrix (rows: true digit, columns: predicted digit)")
    say(matrix.to_string())
    per_digit = np.diag(matrix) / np.maximum(matrix.sum(axis=1).to_numpy(), 1)
    say("\nper-digit accuracy: " + "  ".join(f"{digit}: {100 * accuracy:.1f}%"
                                             for digit, accuracy in enumerate(per_digit)))
    return probabilities


SHADES = " .:-=+*#%@"            # from blank to full ink


def text_art(image):
    """A 28x28 image with values in [0, 1] as 28 framed lines of text, two characters per
    pixel (characters are about twice as tall as they are wide)."""
    levels = np.minimum((image.reshape(28, 28) * len(SHADES)).astype(int), len(SHADES) - 1)
    rows = ["|" + "".join(SHADES[level] * 2 for level in row) + "|" for row in levels]
    edge = "+" + "-" * 56 + "+"
    return "\n".join([edge, *rows, edge])


def mistakes(labels, probabilities):
    """Indices of the misclassified images, the most confidently wrong first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]


def show_mistakes(pixels, labels, probabilities, count, say):
    wrong = mistakes(labels, probabilities)[:count]
    if len(wrong):
        say(f"\n{len(wrong)} of the test digits it got wrong, the most confident mistakes first:")
    for index in wrong:
        guess = int(probabilities[index].argmax())
        say(f"\ntest image {index}: true {labels[index]} -> predicted {guess} "
            f"(confidence {100 * probabilities[index, guess]:.1f}%)")
        say(text_art(pixels[index]))


def write_predictions(net, path, out, say):
    """Kaggle's submission format: ImageId (from 1), Label."""
    pixels, _ = load_mnist_csv(path, labelled=False)
    labels = net.predict(pixels).argmax(axis=1)
    table = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})
    table.to_csv(out, index=False)
    say(f"wrote {len(labels):,} predictions of {path} to {out} (ImageId,Label)")


def plot(path, net, history, pixels, labels, probabilities, say):
    """One figure: learning curves, misclassified test digits, first-layer weights."""
    try:
        import matplotlib
    except ImportError:
        say(f"--plot: matplotlib is not installed, so no figure was drawn "
            f"(pip install matplotlib, then run again)")
        return
    matplotlib.use("Agg")                # draw to a file; there may be no screen
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    mistake_rows, weight_rows, columns = 2, 2, 8
    figure = plt.figure(figsize=(12, 11), layout="constrained")
    top, middle, bottom = figure.subfigures(3, 1, height_ratios=[1.1, 1, 1])

    curves = top.subplots(1, 2)
    if history:
        epochs = np.arange(1, len(history["loss"]) + 1)
        for axes, key in zip(curves, ("loss", "accuracy")):
            axes.plot(epochs, history[key], "o-", label=f"train {key}")
            if f"val_{key}" in history:
                axes.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            axes.set_title(key)
            axes.grid(alpha=0.3)
            axes.legend()
    else:
        for axes in curves:
            axes.text(0.5, 0.5, "no learning curves:\nthe model was loaded, not trained",
                      ha="center", va="center")
            axes.axis("off")

    wrong = mistakes(labels, probabilities) if probabilities is not None else []
    middle.suptitle(f"test digits it gets wrong, most confident first: true → predicted "
                    f"(confidence); {len(wrong)} in all")
    for slot, axes in enumerate(middle.subplots(mistake_rows, columns).flat):
        axes.axis("off")
        if slot < len(wrong):
            index = wrong[slot]
            guess = int(probabilities[index].argmax())
            axes.imshow(pixels[index].reshape(28, 28), cmap="gray_r")
            axes.set_title(f"{labels[index]} → {guess} ({100 * probabilities[index, guess]:.0f}%)",
                           fontsize=10)

    first_dense = next(layer for layer in net.layers if isinstance(layer, Dense))
    units = min(weight_rows * columns, first_dense.n_out)
    bottom.suptitle(f"first-layer weights of {units} hidden units as 28×28 images (red: ink there "
                    f"raises the unit's input, blue: lowers it)\nthe border stays near its random start: "
                    f"those pixels are blank in nearly every image, so their weights get almost no gradient")
    for unit, axes in enumerate(bottom.subplots(weight_rows, columns).flat):
        axes.axis("off")
        if unit < units:
            weights = first_dense.weights[:, unit].reshape(28, 28)
            limit = np.abs(weights).max()
            axes.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_title(f"unit {unit}", fontsize=9)

    figure.savefig(path, dpi=72)
    plt.close(figure)
    say(f"saved the figure to {path}")


def run(args):
    started = time.perf_counter()
    say = (lambda *a, **k: None) if args.quiet else print
    if args.out and not args.predict:
        raise DataError("--out names the predictions file of --predict; give --predict PATH too")
    predict_only = bool(args.load and args.predict)   # Kaggle: a saved model, unlabelled images
    train_path, test_path = choose_files(args, say)

    test_pixels = test_labels = probabilities = history = None
    if not predict_only:
        test_pixels, test_labels = load_mnist_csv(test_path)
    if args.load:
        net = load_model(args.load, say)
    else:
        net, history = train(args, train_path, 0 if predict_only else len(test_pixels), say)
    if not predict_only:
        probabilities = report_test(net, test_pixels, test_labels, say)
        show_mistakes(test_pixels, test_labels, probabilities, args.show_mistakes, say)
    if args.predict:
        write_predictions(net, args.predict, args.out or "predictions.csv", say)
    if args.save:
        net.save(args.save)
        say(f"saved the model to {args.save}")
    if args.history:
        if history is None:
            raise DataError("--history needs training: a model given with --load has no history")
        table = pd.DataFrame(history, index=pd.RangeIndex(1, len(history["loss"]) + 1, name="epoch"))
        table.to_csv(args.history)
        say(f"wrote the history to {args.history}")
    if args.plot:
        plot(args.plot, net, history, test_pixels, test_labels, probabilities, say)
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
    except OSError as error:             # e.g. --save or --history into a missing folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What train_mnist.py shows and writes besides its log: a network in one line, the confusion
matrix, digits drawn as text, the figure of --plot (learning curves, mistakes, first-layer
weights), and the CSV files of --history and --predict. matplotlib is imported only when a
figure is drawn."""

import contextlib
import csv
import dataclasses
import io
import itertools
import math
import os
import signal
import sys
import threading
import warnings

import numpy as np
import pandas as pd

from mnist_csv import printable
from nn import atomic_file


def layer_chain(net):
    """The network's layers in one line: 'Dense(784, 256) -> ReLU() -> ...'."""
    return " -> ".join(repr(layer) for layer in net.layers)


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


def show_confusion(true_labels, predicted_labels, classes, say):
    """The confusion matrix (rows: the true digits, columns: what the network said), then the
    accuracy for each digit."""
    digits = pd.CategoricalDtype(range(classes))
    matrix = pd.crosstab(pd.Series(true_labels, name="true").astype(digits),
                         pd.Series(predicted_labels, name="predicted").astype(digits),
                         dropna=False)
    say("\nconfusion matrix (rows: true digit, columns: predicted digit)")
    say(matrix.to_string())
    per_digit = np.diag(matrix) / np.maximum(matrix.sum(axis=1).to_numpy(), 1)
    say("\nper-digit accuracy: " + "  ".join(f"{digit}: {100 * accuracy:.1f}%"
                                             for digit, accuracy in enumerate(per_digit)))


def silence_stdout():
    """Point standard output at the null device, so that flushing it at exit into a closed
    pipe (`| head`) raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass                             # not a real file (a test's StringIO): nothing to flush


@contextlib.contextmanager
def signals_held():
    """SIGTERM and SIGHUP (`kill`, a closed terminal) held back while an output is written,
    and sent again once it is whole: the file is written, and the signal then does what the
    process's policy says (ends the run; one ignored, as under nohup, stays ignored). Ctrl-C
    still stops at once, and nn's atomic_file then leaves the old file as it was."""
    arrived, previous = [], {}
    if threading.current_thread() is threading.main_thread():   # where handlers can be set
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)                  # no SIGHUP on Windows
            if signum and signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, lambda got, _: arrived.append(got))
    try:
        yield
    finally:
        for signum, handler in previous.items():      # None: set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


def save_model(net, path, say):
    """--save: the network written whole (nn's save writes all or nothing)."""
    with signals_held():
        net.save(path)
    say(f"saved the model to {printable(path)}")


# ----------------------------------------------------------------------------------------------
# 1. Digits as text
# ----------------------------------------------------------------------------------------------

SHADES = " .:-=+*#%@"            # from blank to full ink


def text_art(image):
    """A 28x28 image with values in [0, 1] as 28 framed lines of text, two characters per
    pixel (characters are about twice as tall as they are wide)."""
    levels = np.minimum((image.reshape(28, 28) * len(SHADES)).astype(int), len(SHADES) - 1)
    rows = ["|" + "".join(SHADES[level] * 2 for level in row) + "|" for row in levels]
    edge = "+" + "-" * 56 + "+"
    return "\n".join([edge, *rows, edge])


def show_mistakes(scored, count, say):
    """The `count` most confident mistakes of the test set, each drawn as text."""
    mistakes = scored.mistakes()
    wrong = mistakes[:count]
    if len(wrong):
        say(f"\nthe {len(wrong)} most confident of its {len(mistakes):,} mistakes:")
    for index in wrong:
        guess = int(scored.probabilities[index].argmax())
        say(f"\ntest image {index}: true {scored.labels[index]} -> predicted {guess} "
            f"(confidence {100 * scored.probabilities[index, guess]:.1f}%)")
        say(text_art(scored.pixels[index]))


# ----------------------------------------------------------------------------------------------
# 2. The figure: what the network learned
# ----------------------------------------------------------------------------------------------

def _first_weights(net):
    """The first array of the first layer with parameters: a Dense layer's weights (784, units)
    or a convolution's (filters, channels, k, k)."""
    return next((layer.parameters()[0][0] for layer in net.layers if layer.parameters()), None)


def pyplot():
    """matplotlib.pyplot, drawing to files (there may be no screen). Its import's deprecation
    warnings (from the packages matplotlib uses, on some version pairs) are not the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot
    return matplotlib.pyplot


def plot(path, net, say, history=None, scored=None):
    """One figure: learning curves, misclassified test digits, first-layer weights."""
    plt = pyplot()
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
    side = math.isqrt(len(weights)) if weights is not None and weights.ndim == 2 else 0
    if weights is not None and weights.ndim == 4:   # a convolution's (filters, channels, k, k)
        images, name = weights[:, 0], "filter"
        bottom.suptitle(f"the first convolution's {len(images)} filters, "
                        f"{images.shape[1]}×{images.shape[2]} ({explain})")
    elif side and side * side == len(weights):  # a Dense layer's (784, units): an image a unit
        images, name = weights.T.reshape(-1, side, side), "unit"
        bottom.suptitle(f"first-layer weights of hidden units as {side}×{side} images ({explain})"
                        + ("\nthe border stays near its random start: those pixels are blank in "
                           "nearly every image, so their weights get almost no gradient"
                           if side == 28 else ""))
    else:                                       # a layer of the model's own: nothing to draw
        images, name = [], ""
        bottom.suptitle("the first layer's weights are not images: not drawn")
    for number, axes in enumerate(bottom.subplots(weight_rows, columns).flat):
        axes.axis("off")
        if number < len(images):
            limit = np.abs(images[number]).max()
            axes.imshow(images[number], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_title(f"{name} {number}", fontsize=9)

    with signals_held(), atomic_file(path) as file:    # the format: the name's (checked first)
        figure.savefig(file, dpi=72, format=os.path.splitext(path)[1][1:].lower())
    plt.close(figure)
    say(f"saved the figure to {printable(path)}")


# ----------------------------------------------------------------------------------------------
# 3. CSV files: the history, and predictions
#
# Each is written whole or not at all (nn's atomic_file): an error or Ctrl-C while writing
# leaves the old file as it was; SIGTERM or SIGHUP wait until the new one is whole. A cell
# that a spreadsheet would run as a formula (one starting with =, +, -, @, a tab or a carriage
# return: a file named "=HYPERLINK(...).png") is written with a ' before it, and every text
# cell in quotes, as OWASP's advice on CSV injection says.
# ----------------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _write_csv(table, path, **options):
    with signals_held(), atomic_file(path, "w", newline="") as file:
        table.to_csv(file, **options)


def spreadsheet_safe(text):
    """text, with a ' before it if a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def finite_probabilities(net, pixels, names):
    """net.predict(pixels), refused if any row is not finite (a broken model would otherwise
    answer 0 for it); names(rows) says which inputs those rows are."""
    with np.errstate(over="ignore", invalid="ignore"):   # said below, once and clearly
        probabilities = net.predict(pixels)
    bad = np.flatnonzero(~np.isfinite(probabilities).all(axis=1))
    if len(bad):
        raise ValueError(f"the model's outputs are NaN or infinite for {len(bad):,} of "
                         f"{len(pixels):,} inputs ({names(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}): its weights are broken; "
                         f"nothing written")
    return probabilities


def write_history(history, path, say):
    """The per-epoch lists of the history (loss, accuracy, ...) as CSV, one row an epoch."""
    columns = {key: values for key, values in history.items() if isinstance(values, list)}
    epochs = pd.RangeIndex(1, len(history["loss"]) + 1, name="epoch")
    _write_csv(pd.DataFrame(columns, index=epochs), path)
    say(f"wrote the history to {printable(path)}")


def write_kaggle_predictions(net, pixels, path, out, say):
    """Kaggle's submission format: ImageId (from 1), Label."""
    probabilities = finite_probabilities(
        net, pixels, lambda rows: "ImageId " + ", ".join(str(row + 1) for row in rows))
    labels = probabilities.argmax(axis=1)
    table = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})
    _write_csv(table, out, index=False)
    say(f"wrote {len(labels):,} predictions of {printable(path)} to {printable(out)} "
        f"(ImageId,Label)")


def predict_images(net, paths, digits, out, say):
    """For each image: the digit, its probability and the next two guesses (printed even
    under --quiet: they are the result), then the 28x28 input the network saw."""
    probabilities = finite_probabilities(net, np.stack(digits),
                                         lambda rows: ", ".join(paths[row] for row in rows))
    for path, digit, p in zip(paths, digits, probabilities):
        first, second, third = np.argsort(-p, kind="stable")[:3]
        print(f"{printable(path)}: {first} ({100 * p[first]:.1f}%), "
              f"then {second} ({100 * p[second]:.1f}%), {third} ({100 * p[third]:.1f}%)")
        say(text_art(digit))
    if out:
        table = pd.DataFrame({"path": [spreadsheet_safe(path) for path in paths],
                              "label": probabilities.argmax(axis=1),
                              "probability": probabilities.max(axis=1)})
        _write_csv(table, out, index=False, float_format="%.4f", quoting=csv.QUOTE_NONNUMERIC)
        say(f"wrote {len(paths):,} predictions to {printable(out)} (path,label,probability)")

"""train_mnist.py's flag values, read or refused in one line as argparse does any mistake (instead
of its whole usage), and check_flags: flags that do not go together, or outputs that cannot be
written, refused before any work starts."""

import argparse
import importlib
import os
import socket
import stat
import tempfile
import warnings

import numpy as np

from mnist_csv import DataError, printable
from pictures import predicts_images


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
            bounds += f" and <= {high:g}" if high is not None else ""
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
        self.exit(2, f"error: {printable(message)} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds each option's default to its help, once: not when the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def check_flags(args):
    """Refuse, before any work starts, whatever could otherwise fail only after training."""
    names = [(flag, getattr(args, flag[2:])) for flag in ("--train", "--test", "--load",
                                                          "--save", "--history", "--plot", "--out")]
    for flag, name in names + [("--predict", name) for name in args.predict or []]:
        if name == "":
            raise DataError(f"{flag} was given an empty file name (an unset shell variable?); "
                            f"expected a file name")
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
    if args.workers > 1:
        _require("threadpoolctl", f"--workers {args.workers} (training in {args.workers} "
                                  f"processes)", "threadpoolctl")
    if args.plot:
        _require("matplotlib", "--plot", "matplotlib")
        _check_figure_format(args.plot)
    if args.predict and predicts_images(args.predict):
        _require("PIL", "--predict with images", "pillow")
        _require("skimage", "--predict with images", "scikit-image")
    if args.port and not args.draw:
        raise DataError("--port is where --draw serves its page: give --draw too")
    if args.draw:                                 # the browser decodes pictures: no Pillow
        _require("skimage", "--draw", "scikit-image")
        _check_port(args.port)


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


def _check_port(port):
    """--port: refused now if something already serves there (none given: a free one)."""
    if port:
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError as error:
            raise DataError(f"--port {port}: cannot serve there "
                            f"({os.strerror(error.errno) if error.errno else error})") from None


def _check_figure_format(path):
    """--plot's format is its file name's suffix: one that matplotlib writes."""
    drawing = _require("matplotlib.backend_bases", "--plot", "matplotlib")
    formats = drawing.FigureCanvasBase.get_supported_filetypes()   # what a figure's savefig takes
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in formats:
        found = f".{suffix} files" if suffix else "a file without a suffix"
        raise DataError(f"--plot {path}: matplotlib cannot write {found}; expected a name "
                        f"ending in {', '.join('.' + name for name in sorted(formats))}")


def _require(module, needed_for, package):
    """The module, imported; refused in one line saying how to install it if it is not."""
    try:
        with warnings.catch_warnings():   # deprecation notes among a package's own imports
            warnings.simplefilter("ignore", DeprecationWarning)    # are not the user's
            return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{needed_for} needs {package}, which is not installed: "
                        f"pip install {package}") from None


def check_batches(rows, args):
    """--batchnorm normalises over the examples of a batch (in each process, its part): refuse,
    before training, batches that would leave it one example."""
    last = rows % args.batch_size or args.batch_size
    smallest = min(args.batch_size, last) // args.workers
    if args.batchnorm and smallest < 2:
        parts = f" in {args.workers} processes" if args.workers > 1 else ""
        raise DataError(f"--batchnorm needs 2 or more examples in every batch{parts}: "
                        f"{rows:,} training rows in batches of {args.batch_size}{parts} leave "
                        f"{smallest}; choose another --batch-size")

"""Train nn.py's network on MNIST from CSV: train, validate after every epoch, then test.

    python train_mnist.py              # the full MNIST from data/, about 98.8% test accuracy
    python train_mnist.py --help       # every option with its default
    python train_mnist.py --load model.npz --predict my_digit.png    # read your own digit

run() below is the whole program in the order it runs, arguments -> data -> model -> fit ->
test -> report, and the sections after it follow that order. mnist_csv.py, pictures.py and
flags.py read (or refuse) the files, pictures and flag values a user gives; outputs.py draws
and writes the results; draw.py serves --draw's page.
"""

import contextlib
import os
import sys
import time

import numpy as np

from nn import (MAX_STORED_VALUES, SGD, Adam, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                LeakyReLU, MaxPool2D, Network, RandomShift, ReLU, Reshape, Sigmoid, Softmax, Tanh,
                max_workers, one_hot)
from outputs import (Scored, finite_probabilities, layer_chain, plot, predict_images, save_model,
                     show_confusion, show_mistakes, silence_stdout, write_history,
                     write_kaggle_predictions)
from flags import (HelpFormatter, OneLineParser, bounded_number, check_batches, check_flags,
                   fraction, layer_widths, whole_number)
from draw import serve
from mnist_csv import CLASSES, PIXELS, DataError, load_mnist_csv, load_model, printable
from pictures import MAX_PICTURE_PIXELS, read_to_predict, refused_summary

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAIN = os.path.join(HERE, "data", "mnist_train.csv.gz")
DEFAULT_TEST = os.path.join(HERE, "data", "mnist_test.csv.gz")
COLAB_TRAIN = "/content/sample_data/mnist_train_small.csv"
COLAB_TEST = "/content/sample_data/mnist_test.csv"
CLASSIC_VALIDATION = 10_000      # MNIST's classic split: 50,000 to train, 10,000 to validate


def run(args):
    """The whole program: arguments -> data -> model -> fit -> test -> report."""
    started = time.perf_counter()
    say = (lambda *parts: None) if args.quiet else print
    # Arguments: refuse now whatever could otherwise fail only after training.
    check_flags(args)
    note_another_nn()
    net = load_model(args.load) if args.load else None
    if net is not None:
        say(f"model:  {layer_chain(net)} loaded from {printable(args.load)}, "
            f"{net.count_params():,} parameters")
    csv_pixels, image_paths, digits, refused = read_to_predict(args.predict, args.background)
    if refused and not digits:           # no picture left to predict: no work to do
        print(refused_summary(refused, len(refused)), file=sys.stderr)
        return 1

    # Data: the training rows, split into training and validation, and the test rows (none
    # when a saved model only predicts, as for Kaggle).
    train_path, test_path = choose_files(args, say)
    if net is None:
        X, Y, validation, split = split_training_rows(
            train_path, *load_mnist_csv(train_path, nrows=args.limit), args.val_size)
        check_batches(len(X), args)
    test = None if args.load and args.predict else load_mnist_csv(test_path)

    history = scored = None
    if net is None:
        say(f"data:   {split}; {len(test[0]):,} test rows")
        # Model: the network and the optimizer the flags ask for.
        net, optimizer = BUILDERS[args.model](args), build_optimizer(args)
        say_before_training(net, optimizer, X, Y, args, say)
        # Fit: learn from the training rows, validating after every epoch.
        history = net.fit(X, Y, epochs=args.epochs, batch_size=args.batch_size,
                          optimizer=optimizer, validation_data=validation,
                          seed=args.seed, verbose=0 if args.quiet else 1,
                          patience=args.patience, workers=args.workers,
                          callbacks=load_aware_callbacks(args.workers, say))

    # Test: rows the network never saw.
    if test is not None:
        scored = report_test(net, *test, say)
        show_mistakes(scored, args.show_mistakes, say)

    # Report: predictions, the model, the history and the figure, as asked.
    if csv_pixels is not None:
        write_kaggle_predictions(net, csv_pixels, args.predict[0], args.out or "predictions.csv",
                                 say)
    if digits:
        predict_images(net, image_paths, digits, args.out, say)
    if args.save:
        save_model(net, args.save, say)
    if args.history:
        write_history(history, args.history, say)
    if args.plot:
        plot(args.plot, net, say, history=history, scored=scored)
    say(f"total time: {time.perf_counter() - started:.1f}s")
    if args.draw:                        # the drawing page, until Ctrl-C
        serve(net, args.port or 0)
    if refused:                          # each named as it was read; all listed again here
        print(refused_summary(refused, len(refused) + len(digits)), file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:                                 # after the run, BLAS's threads as they were
        from threadpoolctl import threadpool_limits
        threads_kept = threadpool_limits(limits=None, user_api="blas")
    except ImportError:                  # optional: nothing then changes them
        threads_kept = contextlib.nullcontext()
    try:
        with threads_kept:
            return run(args)
    except BrokenPipeError:              # `| head` closed the pipe: stop quietly, as Python's
        silence_stdout()                 # documentation recommends
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (DataError, ValueError) as caught:
        error, status = caught, 2
    except (FloatingPointError, OSError, RuntimeError, MemoryError) as caught:
        # diverged; the disk full when saving; a helper process killed; out of memory...
        error, status = caught, 1
    print(f"error: {printable(str(error) or type(error).__name__)}", file=sys.stderr)
    return status


# ----------------------------------------------------------------------------------------------
# 1. Arguments
# ----------------------------------------------------------------------------------------------

# Each --model's training defaults (a flag given wins); the learning rate follows the optimizer.
TRAINING_DEFAULTS = {
    "mlp": {"epochs": 15, "batch_size": 128, "optimizer": "sgd", "lr_decay": 0.8, "workers": 1,
            "augment": 1},
    "cnn": {"epochs": 8, "batch_size": 64, "optimizer": "adam", "lr_decay": 0.7, "workers": 2,
            "augment": 0},
}
LEARNING_RATES = {"mlp": {"sgd": 0.1, "adam": 0.001}, "cnn": {"sgd": 0.1, "adam": 0.002}}


def _defaults_text(name):
    """' (default: X)' for a training flag, naming each --model's default where they differ."""
    mlp, cnn = TRAINING_DEFAULTS["mlp"][name], TRAINING_DEFAULTS["cnn"][name]
    return f" (default: {mlp})" if mlp == cnn else f" (default: {mlp}; {cnn} with --model cnn)"


def note_another_nn():
    """Name the nn.py imported when it is not the one beside this script (a folder first on
    PYTHONPATH holds another, a course's, say): its code is what trains."""
    imported = os.path.realpath(sys.modules["nn"].__file__)
    if os.path.dirname(imported) != os.path.realpath(HERE):
        print(f"note: using {printable(imported)}, not the nn.py beside train_mnist.py",
              file=sys.stderr)


def parse_args(argv=None):
    parser = OneLineParser(
        description="Train a neural network (nn.py) on MNIST CSV files: train, validate, test.",
        formatter_class=HelpFormatter, allow_abbrev=False)
    data = parser.add_argument_group("data")
    data.add_argument("--train", default=DEFAULT_TRAIN, metavar="PATH",
                      help="training CSV (.csv or compressed, with or without header); if "
                           "this and --test are missing, Colab's sample_data is used")
    data.add_argument("--test", default=DEFAULT_TEST, metavar="PATH", help="test CSV")
    data.add_argument("--limit", type=whole_number(1), metavar="N",
                      help="use only the first N rows of the training file (quick runs)")
    data.add_argument("--val-size", type=whole_number(0), metavar="N",
                      help="examples held out from the end of the training rows for per-epoch "
                           "validation; 0 for none (default: 10,000, MNIST's classic split, or a "
                           "sixth of the rows when there are fewer than 60,000)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(BUILDERS), default="mlp",
                       help="mlp: Dense layers (--hidden, --activation); cnn: a small "
                            "convolutional network")
    model.add_argument("--hidden", type=layer_widths(mlp_parameters, MAX_STORED_VALUES),
                       metavar="WIDTHS",
                       help="the mlp's hidden layer widths, comma-separated ('none' for no "
                            "hidden layer; default: 256,128)")
    model.add_argument("--activation", choices=list(ACTIVATIONS),
                       help="activation of the mlp's hidden layers (default: relu)")
    model.add_argument("--dropout", type=fraction, default=0.0, metavar="RATE",
                       help="dropout after each hidden activation: the fraction of its outputs "
                            "zeroed at random in each training step (0: none)")
    model.add_argument("--batchnorm", action="store_true",
                       help="BatchNorm before each hidden activation (batch normalisation)")
    model.add_argument("--augment", type=whole_number(0), nargs="?", const=2, metavar="PIXELS",
                       help="data augmentation: move each training image by up to PIXELS "
                            "(2 if given without a number) at random, anew every epoch; never "
                            "the validation or test images (0: none)" + _defaults_text("augment"))
    model.add_argument("--loss", choices=["categorical_crossentropy", "mse"],
                       default="categorical_crossentropy", help="loss to minimise")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizer", choices=["sgd", "adam"],
                          help="sgd or adam" + _defaults_text("optimizer"))
    training.add_argument("--epochs", type=whole_number(1),
                          help="passes over the data" + _defaults_text("epochs"))
    training.add_argument("--batch-size", type=whole_number(1),
                          help="examples per step" + _defaults_text("batch_size"))
    training.add_argument("--lr", type=bounded_number(0, False),
                          help="learning rate (> 0; default: "
                               + "; ".join(f"{lr:g} for {name}" + ("" if model == "mlp"
                                                                    else f" with --model {model}")
                                           for model, rates in LEARNING_RATES.items()
                                           for name, lr in rates.items()) + ")")
    training.add_argument("--momentum", type=bounded_number(0, True),
                          help="SGD's momentum (>= 0; default: 0.9); Adam has its own")
    training.add_argument("--weight-decay", type=bounded_number(0, True), default=0.0,
                          help="L2 weight decay (>= 0)")
    training.add_argument("--lr-decay", type=bounded_number(0, False, 1),
                          help="multiply the learning rate by this after every epoch (0 < x <= 1)"
                               + _defaults_text("lr_decay"))
    training.add_argument("--patience", type=whole_number(1), metavar="N",
                          help="early stopping: stop once the validation loss has not improved "
                               "for N epochs, and keep the weights of the best epoch")
    cores = "here (the cores this process may use, on Linux; 1 on other systems)"
    training.add_argument("--workers", type=whole_number(1, max_workers(), cores), metavar="N",
                          help="processes that share each batch (nn's fit(workers=N), on "
                               "Linux): faster for the CNN, not for the MLP (docs/performance.md "
                               "has the measurements)" + _defaults_text("workers")
                               + ", at most the cores")
    training.add_argument("--seed", type=whole_number(0), default=0,
                          help="seed for the initial weights, the shuffling and dropout")
    output = parser.add_argument_group("output")
    output.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    output.add_argument("--history", metavar="PATH", help="write the per-epoch history as CSV")
    output.add_argument("--quiet", action="store_true",
                        help="print only the results: the test accuracy, or the predictions")
    output.add_argument("--show-mistakes", type=whole_number(0), default=2, metavar="N",
                        help="draw N misclassified test digits as text art (0: none)")
    output.add_argument("--plot", metavar="PATH.png",
                        help="save a figure: learning curves, misclassified test digits and "
                             "first-layer weights or filters (needs matplotlib)")
    output.add_argument("--draw", action="store_true",
                        help="at the end, serve a page on this machine (127.0.0.1) to draw "
                             "digits on and watch the network read them, until Ctrl-C")
    output.add_argument("--port", type=whole_number(1, 65535, "(the highest port)"), metavar="N",
                        help="the port --draw serves on (default: a free one)")
    use = parser.add_argument_group("using a saved model")
    use.add_argument("--load", metavar="PATH",
                     help="skip training: evaluate the model saved at PATH (by --save) on --test; "
                          "the model and training flags are then ignored")
    use.add_argument("--predict", nargs="+", metavar="PATH",
                     help="images of digits (.png, .jpg, ...; files or folders), or one CSV of "
                          "784 pixel columns (header or not; a label column is ignored) such as "
                          "Kaggle's test.csv; with --load, only this. Every file is read (in a "
                          "folder, all but hidden ones and subfolders); one that cannot be (not "
                          f"a picture, no ink, more than {MAX_PICTURE_PIXELS:,} pixels) is "
                          "named and the others predicted, and the exit status is then 1")
    use.add_argument("--background", choices=["auto", "light", "dark"], default="auto",
                     help="the images' page: light (dark ink on paper), dark (light ink, like "
                          "MNIST) or auto (decided from the whole picture: a light page unless "
                          "most of it is much darker than its ink)")
    use.add_argument("--out", metavar="PATH",
                     help="where --predict writes its predictions: ImageId,Label rows for a CSV "
                          "(predictions.csv if not given), path,label,probability rows for "
                          "images (only if given)")
    args = parser.parse_args(argv)
    for name in MLP_DEFAULTS:                # the mlp's flags mean nothing to another model
        if args.model != "mlp" and getattr(args, name) is not None:
            parser.error(f"--{name} is for --model mlp; --model {args.model} has its own layers")
    return _with_defaults(args)


MLP_DEFAULTS = {"hidden": [256, 128], "activation": "relu"}


def _with_defaults(args):
    """Fill in the defaults that depend on other flags: the mlp's layers, the --model's
    training defaults, then the optimizer's learning rate and SGD's momentum."""
    for name, value in {**MLP_DEFAULTS, **TRAINING_DEFAULTS[args.model]}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.workers = min(args.workers, max_workers())   # a default this machine can run
    if args.lr is None:
        args.lr = LEARNING_RATES[args.model][args.optimizer]
    if args.momentum is None and args.optimizer == "sgd":
        args.momentum = 0.9
    return args


# ----------------------------------------------------------------------------------------------
# 2. Data
# ----------------------------------------------------------------------------------------------

def choose_files(args, say):
    """The --train/--test paths, or Colab's sample_data when the defaults are missing."""
    defaults_missing = not os.path.exists(args.train) and not os.path.exists(args.test)
    if (args.train, args.test) == (DEFAULT_TRAIN, DEFAULT_TEST) and defaults_missing \
            and os.path.exists(COLAB_TRAIN) and os.path.exists(COLAB_TEST):
        say(f"{printable(DEFAULT_TRAIN)} is missing: using Colab's {COLAB_TRAIN} and {COLAB_TEST}")
        return COLAB_TRAIN, COLAB_TEST
    return args.train, args.test


def split_training_rows(path, pixels, labels, val_size):
    """The training rows split in two: (X, Y) to learn from, (X, Y) to validate on (None when
    val_size is 0), and a line that says how they were split."""
    if val_size is None:
        val_size = CLASSIC_VALIDATION if len(pixels) >= 60_000 else len(pixels) // 6
    if val_size >= len(pixels):
        raise DataError(f"--val-size {val_size} leaves no training examples out of "
                        f"{len(pixels)} rows in {path}")
    split = len(pixels) - val_size
    validation = (pixels[split:], one_hot(labels[split:], CLASSES)) if val_size else None
    return (pixels[:split], one_hot(labels[:split], CLASSES), validation,
            f"{printable(path)}: {len(pixels):,} rows -> {split:,} train, {val_size:,} validation")


# ----------------------------------------------------------------------------------------------
# 3. Model
# ----------------------------------------------------------------------------------------------

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU}


def mlp_parameters(widths):
    """How many parameters a 784 -> widths -> 10 network of Dense layers has."""
    sizes = [PIXELS, *widths, CLASSES]
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def augmentation(args):
    """--augment N: while training, each image moved by up to N pixels at random."""
    return [RandomShift(args.augment)] if args.augment else []


def build_mlp(args):
    """Dense layers of the --hidden widths, each followed by BatchNorm with --batchnorm, the
    --activation, and Dropout with --dropout; then a Dense layer to the 10 digits and Softmax.
    --augment shifts the images first."""
    # He initialisation suits ReLU and its leaky kin; Glorot suits sigmoid and tanh (see Dense).
    init = "he" if args.activation in ("relu", "leaky_relu") else "glorot"
    layers = [Reshape((1, 28, 28)), *augmentation(args), Flatten()] if args.augment else []
    width = PIXELS
    for number, hidden in enumerate(args.hidden):
        layers += ([Dense(width, hidden, seed=args.seed + number, init=init)]
                   + [BatchNorm(hidden)] * args.batchnorm + [ACTIVATIONS[args.activation]()])
        if args.dropout:
            layers.append(Dropout(args.dropout))
        width = hidden
    layers += [Dense(width, CLASSES, seed=args.seed + len(args.hidden), init="glorot"), Softmax()]
    return Network(layers, loss=args.loss)


def build_cnn(args):
    """A small LeNet-like network: a 5x5 convolution with 16 filters and a 3x3 one with 32,
    each followed by 2x2 max-pooling and ReLU (pooling first: max and ReLU commute, and ReLU
    then runs on a quarter of the numbers), then Dropout, a hidden Dense layer of 128, Dropout
    again, and Softmax over the 10 digits. --dropout, if given, replaces both dropout rates.
    --batchnorm puts BatchNorm before each ReLU, --augment shifts the images first."""
    first, second = (args.dropout, args.dropout) if args.dropout else (0.25, 0.3)
    norm = (lambda n: [BatchNorm(n)]) if args.batchnorm else (lambda n: [])
    layers = [Reshape((1, 28, 28)), *augmentation(args),     # MNIST's rows of 784 -> 1 x 28 x 28
              Conv2D(1, 16, 5, seed=args.seed), MaxPool2D(2), *norm(16), ReLU(),  # 16 x 12 x 12
              Conv2D(16, 32, 3, seed=args.seed + 1), MaxPool2D(2), *norm(32), ReLU(),  # 32x5x5
              Flatten(), Dropout(first),
              Dense(32 * 5 * 5, 128, seed=args.seed + 2), *norm(128), ReLU(), Dropout(second),
              Dense(128, CLASSES, seed=args.seed + 3, init="glorot"), Softmax()]
    return Network(layers, loss=args.loss)


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def build_optimizer(args):
    if args.optimizer == "adam":
        return Adam(lr=args.lr, weight_decay=args.weight_decay, lr_decay=args.lr_decay)
    return SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
               lr_decay=args.lr_decay)


# ----------------------------------------------------------------------------------------------
# 4. Fit
# ----------------------------------------------------------------------------------------------

def load_aware_callbacks(workers, say):
    """nn_parallel's callbacks for a machine other programs share, when threadpoolctl is
    installed (check_flags asks for it with --workers 2 or more); training is the same without."""
    try:
        import nn_parallel
    except ImportError:
        return []
    return nn_parallel.load_aware_callbacks(workers, say)


def say_before_training(net, optimizer, X, Y, args, say):
    """The model and the training plan, and the loss before any training on 1,000 rows: a
    check that the network starts as an untrained one should, cheap on a busy machine."""
    if args.quiet:
        return
    say(f"model:  {layer_chain(net)}, {net.count_params():,} parameters, loss {args.loss}")
    say(f"train:  {args.epochs} epochs, batch {args.batch_size}, {optimizer!r}, "
        f"seed {args.seed}" + (f", early stopping with patience {args.patience}"
                               if args.patience else "")
        + (f", {args.workers} processes" if args.workers > 1 else ""))
    initial_loss, initial_accuracy = net.evaluate(X[:1000], Y[:1000])
    accuracy = "" if initial_accuracy is None else f", accuracy {initial_accuracy:.4f}"
    # An untrained net gives each class about 1/10: a cross-entropy of ln 10, or a squared
    # error of (0.9^2 + 9 * 0.1^2) / 10 = 0.09 per output.
    expected = f"ln 10 = {np.log(10):.4f}" if args.loss == "categorical_crossentropy" else "0.0900"
    say(f"before training: loss {initial_loss:.4f} (about {expected} is expected for an "
        f"untrained {CLASSES}-class net){accuracy}")


# ----------------------------------------------------------------------------------------------
# 5. Test
# ----------------------------------------------------------------------------------------------

def report_test(net, pixels, labels, say):
    """Print test accuracy, loss, confusion matrix and per-digit accuracy; returns Scored."""
    probabilities = finite_probabilities(
        net, pixels, lambda rows: "test rows " + ", ".join(str(row + 1) for row in rows))
    test_loss = net.loss(one_hot(labels, CLASSES), probabilities)   # no second pass
    predicted = probabilities.argmax(axis=1)
    print(f"test accuracy: {100 * np.mean(predicted == labels):.2f}% (test loss {test_loss:.4f}, "
          f"{len(pixels):,} images)")
    show_confusion(labels, predicted, CLASSES, say)
    return Scored(pixels, labels, probabilities)


if __name__ == "__main__":
    sys.exit(main())

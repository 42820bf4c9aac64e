"""Is this nn.py faster or slower than another version of it? Times one training epoch with
each, interleaved round after round, and gives after/before ratios taken within each round.

    git worktree add /tmp/before HEAD~5                   # the version to compare with
    python benchmarks/compare.py /tmp/before               # the default MLP, 9 rounds
    python benchmarks/compare.py /tmp/before --model small --workers 2 --rows 20000
    OPENBLAS_NUM_THREADS=1 python benchmarks/compare.py /tmp/before     # BLAS on one thread

BEFORE (and AFTER, this checkout unless given) are folders that hold an nn.py. Each epoch
runs in a fresh Python process that imports the nn.py (and nn_parallel.py) of its folder,
builds the model from the layers both versions have, trains a few batches to warm up, then
times one epoch of `--rows` MNIST training images (float32, batch `--batch-size`, SGD with
momentum 0.9). The two versions alternate which goes first, so a slow moment of a shared
machine affects both alike; each round's ratio is after/before, and the summary gives their
median, middle half (the rounds between the first and third quartiles) and range. Models:
  mlp    784-256-128-10 with ReLU: the network of `python train_mnist.py`
  small  conv 8 -> pool -> conv 16 -> pool -> 64 -> 10 (3x3 kernels, padding 1), as in
         bench_cnn.py
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARM_UP_BATCHES = 10
sys.path.insert(0, ROOT)      # this checkout's flags.py and mnist_csv.py; the nn.py timed is
                              # imported in a child process, from the folder it is given

from flags import OneLineParser, whole_number  # noqa: E402


def build(nn, model):
    """The layers of `model`, from the public layers every version of nn.py has."""
    if model == "mlp":
        return [nn.Dense(784, 256, seed=0), nn.ReLU(), nn.Dense(256, 128, seed=1), nn.ReLU(),
                nn.Dense(128, 10, seed=2), nn.Softmax()]
    return [nn.Reshape((1, 28, 28)), nn.Conv2D(1, 8, 3, padding=1, seed=0), nn.ReLU(),
            nn.MaxPool2D(2), nn.Conv2D(8, 16, 3, padding=1, seed=1), nn.ReLU(), nn.MaxPool2D(2),
            nn.Flatten(), nn.Dense(16 * 7 * 7, 64, seed=2), nn.ReLU(), nn.Dense(64, 10, seed=3),
            nn.Softmax()]


def one_epoch(folder, data, model, batch_size, workers):
    """In a child process: seconds for one epoch of the nn.py in `folder`, after a warm-up."""
    sys.path.insert(0, folder)
    sys.modules.pop("nn", None)    # this checkout's, which its flags.py brought in: not the one
    import nn                      # timed
    assert os.path.samefile(nn.__file__, os.path.join(folder, "nn.py"))
    arrays = np.load(data)
    X, Y = arrays["X"], nn.one_hot(arrays["labels"], 10)
    net = nn.Network(build(nn, model))
    optimizer = nn.SGD(lr=0.01, momentum=0.9)
    warm_up = WARM_UP_BATCHES * batch_size
    net.fit(X[:warm_up], Y[:warm_up], batch_size=batch_size, optimizer=optimizer, seed=0,
            verbose=0, workers=workers)
    start = time.perf_counter()
    net.fit(X, Y, batch_size=batch_size, optimizer=optimizer, seed=1, verbose=0,
            workers=workers)
    return time.perf_counter() - start


def timed(folder, data, args):
    command = [sys.executable, os.path.abspath(__file__), folder, "--data", data,
               "--model", args.model, "--batch-size", str(args.batch_size),
               "--workers", str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the epoch with {folder}/nn.py failed:\n{result.stderr.strip()}")
    return float(result.stdout)


def main():
    parser = OneLineParser(description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("before", help="folder of the nn.py to compare with")
    parser.add_argument("after", nargs="?", default=ROOT, help="folder of the other nn.py")
    parser.add_argument("--model", choices=["mlp", "small"], default="mlp")
    parser.add_argument("--rows", type=whole_number(1), default=60_000,
                        help="training images per epoch")
    parser.add_argument("--batch-size", type=whole_number(1), default=64)
    parser.add_argument("--workers", type=whole_number(1), default=1, help="fit(workers=...)")
    parser.add_argument("--rounds", type=whole_number(1), default=9)
    parser.add_argument("--data", help=argparse.SUPPRESS)      # in a child process: the
    args = parser.parse_args()                                  # images, saved by the parent
    if args.data:                # a child process: `before` is the one folder it times
        print(one_epoch(args.before, args.data, args.model, args.batch_size, args.workers))
        return
    for folder in (args.before, args.after):
        if not os.path.isfile(os.path.join(folder, "nn.py")):
            parser.error(f"{folder} holds no nn.py")
    from mnist_csv import load_mnist_csv
    X, labels = load_mnist_csv(os.path.join(ROOT, "data", "mnist_train.csv.gz"), nrows=args.rows)
    print(f"{args.model}, {len(X):,} rows, batch {args.batch_size}, workers={args.workers}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}: "
          f"one epoch, seconds")
    print(f"  before: {args.before}\n  after:  {args.after}")
    with tempfile.TemporaryDirectory() as temporary:
        data = os.path.join(temporary, "mnist.npz")
        np.savez(data, X=X.astype(np.float32), labels=labels)
        ratios = []
        for round_ in range(1, args.rounds + 1):
            pair = [("before", args.before), ("after", args.after)]
            seconds = dict((name, timed(folder, data, args))
                           for name, folder in (pair if round_ % 2 else pair[::-1]))
            ratios.append(seconds["after"] / seconds["before"])
            print(f"round {round_}: before {seconds['before']:.3f}  after {seconds['after']:.3f}"
                  f"  after/before {ratios[-1]:.3f}", flush=True)
    low, high = np.percentile(ratios, [25, 75])
    print(f"after/before: median {np.median(ratios):.3f}, middle half {low:.3f}-{high:.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} rounds)")


if __name__ == "__main__":
    main()

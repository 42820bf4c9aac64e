"""How fast does nn.py train an MNIST epoch, next to the matrix products alone and to PyTorch?

    python benchmarks/bench_mlp.py                 # about 3 minutes; prints a Markdown table
    python benchmarks/bench_mlp.py --rounds 3 --models 784-256-128-10 --batch-sizes 64

For each model and batch size it times one training epoch over all 60,000 MNIST images (float32,
already in memory) of:
  nn.py      Network.fit(epochs=1): shuffling, batching, forward, backward, SGD with momentum;
  GEMM-only  the exact matrix products that epoch needs, at the same shapes and dtype, and
             nothing else: the practical limit for any NumPy implementation;
  PyTorch    the same model, batches, loss and optimizer (only when torch is installed).
The three run interleaved, round after round, after a warm-up round, and each ratio is taken
within a round, so a slow moment of a shared machine affects both sides of a ratio alike.
It also runs the default `python train_mnist.py` once for its wall time and peak memory.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from nn import SGD, Dense, Network, ReLU, Softmax, one_hot  # noqa: E402
from mnist_csv import load_mnist_csv                          # noqa: E402
from flags import OneLineParser, whole_number                 # noqa: E402
from train_mnist import DEFAULT_TRAIN                       # noqa: E402

try:
    import torch
except ImportError:
    torch = None


def batch_sizes(text):
    """--batch-sizes: whole numbers >= 1 separated by commas."""
    return [whole_number(1)(part) for part in text.split(",")]


def models_of(text):
    """--models: each model's layer widths from 784 to 10 (784-128-10), separated by commas."""
    try:
        models = [[whole_number(1)(width) for width in model.split("-")]
                  for model in text.split(",")]
    except argparse.ArgumentTypeError:
        models = [[]]
    if any(len(widths) < 2 or (widths[0], widths[-1]) != (784, 10) for widths in models):
        raise argparse.ArgumentTypeError(f"expected layer widths from 784 to 10 such as "
                                         f"784-128-10, got {text!r}")
    return models


def nn_network(widths, seed=0):
    layers = []
    for number, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        layers += [Dense(n_in, n_out, seed=seed + number), ReLU()]
    layers[-1] = Softmax()
    return Network(layers, loss="categorical_crossentropy")


def time_nn_epoch(net, optimizer, X, Y, batch_size, seed):
    start = time.perf_counter()
    net.fit(X, Y, epochs=1, batch_size=batch_size, optimizer=optimizer, seed=seed, verbose=0)
    return time.perf_counter() - start


def gemm_only_epoch(widths, n, batch_size, dtype=np.float32):
    """A function that runs the matrix products of one epoch: per batch, for each Dense layer,
    forward x @ W and backward x.T @ g (weights' gradient) and g @ W.T (input gradient, which
    nn.py skips for the first layer, whose input is the data)."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(widths, widths[1:])]
    gradients = [np.empty_like(w) for w in weights]
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    inputs = {b: [rng.standard_normal((b, a)).astype(dtype) for a in widths[:-1]] for b in set(sizes)}
    upstream = {b: [rng.standard_normal((b, c)).astype(dtype) for c in widths[1:]] for b in set(sizes)}

    def epoch():
        start = time.perf_counter()
        for b in sizes:
            xs, gs = inputs[b], upstream[b]
            for x, w in zip(xs, weights):
                x @ w
            for layer in range(len(weights) - 1, -1, -1):
                np.matmul(xs[layer].T, gs[layer], out=gradients[layer])
                if layer > 0:
                    gs[layer] @ weights[layer].T
        return time.perf_counter() - start
    return epoch


def torch_epoch_runner(widths, X, labels, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    modules = []
    for n_in, n_out in zip(widths, widths[1:]):
        modules += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*modules[:-1])          # softmax lives inside the loss
    return torch_epoch(model, X, labels, batch_size, lr, momentum, seed)


def torch_epoch(model, X, labels, batch_size, lr, momentum, seed):
    """A function that trains `model` for one epoch, as nn.py's fit does, and returns the
    seconds it took (bench_cnn.py uses it too)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_function = torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)

    def epoch():
        start = time.perf_counter()
        order = torch.randperm(len(X_t), generator=generator)
        total = 0.0
        for first in range(0, len(X_t), batch_size):
            rows = order[first:first + batch_size]
            optimizer.zero_grad()
            loss = loss_function(model(X_t[rows]), y_t[rows])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)             # as nn.py, report the epoch's loss
        return time.perf_counter() - start
    return epoch


def summary(values):
    values = np.asarray(values)
    return f"{np.median(values):.3f} ({values.min():.3f}-{values.max():.3f})"


def blas_description():
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{p['internal_api']} {p.get('version')} ({p.get('architecture')}), "
                 f"{p['num_threads']} threads" for p in threadpool_info() if p["user_api"] == "blas"]
        if pools:
            return "; ".join(pools)
    except ImportError:
        pass
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} (threads: see OPENBLAS_NUM_THREADS)"
    except Exception:
        return "unknown"


# Runs a command and prints its peak RSS in KB. It runs in a small process of its own because
# on Linux a child's ru_maxrss starts from the RSS of the process it was forked from: measured
# straight from this (large) benchmark process, the figure would be this process's size.
PEAK_RSS_OF = """
import resource, subprocess, sys
completed = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
print(completed.stdout.strip())
print(completed.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def mnist_and_header(use_torch, setting, rounds, skipped="PyTorch not installed or skipped"):
    """MNIST's training images (X, labels, one-hot Y), after printing the header every table of
    epoch times starts with: the machine, its BLAS, and what one epoch is (`setting`: batch,
    optimizer)."""
    X, labels = load_mnist_csv(DEFAULT_TRAIN)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, NumPy {np.__version__}"
          + (f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
             if use_torch else f", {skipped} (column left out)"))
    print(f"BLAS: {blas_description()}")
    print(f"one epoch = {len(X):,} images, float32{setting}; seconds as median (min-max) of "
          f"{rounds} rounds after 1 warm-up; ratios taken within each round\n")
    return X, labels, one_hot(labels, 10)


def default_run():
    """Wall time and peak RSS of the default `python train_mnist.py --quiet`."""
    start = time.perf_counter()
    helper = subprocess.run([sys.executable, "-c", PEAK_RSS_OF, sys.executable,
                             os.path.join(ROOT, "train_mnist.py"), "--quiet"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    *printed, last = helper.stdout.strip().splitlines()
    status, peak_kb = (int(part) for part in last.split())
    return seconds, peak_kb / 1024, " ".join(printed), status


def main():
    parser = OneLineParser(description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=whole_number(1), default=5,
                        help="timed epochs of each kind")
    parser.add_argument("--models", type=models_of, default="784-128-10,784-256-128-10",
                        help="layer widths")
    parser.add_argument("--batch-sizes", type=batch_sizes, default="32,64,128")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-default-run", action="store_true",
                        help="skip timing the default train_mnist.py run")
    args = parser.parse_args()
    use_torch = torch is not None and not args.no_torch

    lr, momentum = 0.01, 0.9
    X, labels, Y = mnist_and_header(use_torch, "", args.rounds)
    header = "| model | batch | nn.py s | GEMM-only s | nn.py / GEMM-only |"
    rule = "| --- | --- | --- | --- | --- |"
    if use_torch:
        header += " PyTorch s | nn.py / PyTorch |"
        rule += " --- | --- |"
    print(header)
    print(rule, flush=True)
    for widths in args.models:
        model = "-".join(map(str, widths))
        for batch_size in args.batch_sizes:
            net = nn_network(widths)
            optimizer = SGD(lr=lr, momentum=momentum)
            gemm = gemm_only_epoch(widths, len(X), batch_size)
            runner = torch_epoch_runner(widths, X, labels, batch_size, lr, momentum, 0) if use_torch else None
            times = {"nn": [], "gemm": [], "torch": []}
            for round_number in range(args.rounds + 1):     # round 0 is the warm-up
                measured = {"nn": time_nn_epoch(net, optimizer, X, Y, batch_size, round_number),
                            "gemm": gemm()}
                if use_torch:
                    measured["torch"] = runner()
                if round_number:
                    for key, value in measured.items():
                        times[key].append(value)
            nn_times, gemm_times = np.array(times["nn"]), np.array(times["gemm"])
            row = (f"| {model} | {batch_size} | {summary(nn_times)} | {summary(gemm_times)} | "
                   f"{summary(nn_times / gemm_times)} |")
            if use_torch:
                torch_times = np.array(times["torch"])
                row += f" {summary(torch_times)} | {summary(nn_times / torch_times)} |"
            print(row, flush=True)

    if not args.no_default_run:
        seconds, peak_mb, output, status = default_run()
        print(f"\ndefault `python train_mnist.py`: {seconds:.1f} s wall, peak RSS {peak_mb:.0f} MB, "
              f"exit status {status}; it printed: {output}")


if __name__ == "__main__":
    main()

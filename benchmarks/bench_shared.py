"""Does training keep its speed when other programs share the machine?

    python benchmarks/bench_shared.py          # with a Python that has torch installed
    python benchmarks/bench_shared.py --rounds 1 --policies adaptive      # a quick look
    python benchmarks/bench_shared.py --policies all,one --root ../old    # another checkout

Each run is a whole process, timed from its start to its exit (reading the CSV files,
training, testing):

    python train_mnist.py --limit 20000 --epochs 2 --val-size 2000 --quiet

"alone" runs one such process; "beside two copies" starts three identical ones at once and
reports the median of their three times, so each runs beside two copies of itself. The
thread policies:
  adaptive    train_mnist.py as it is: it times training steps with one BLAS thread and with
              all of them, keeps the faster and checks again as the load changes;
  all         OPENBLAS_NUM_THREADS=<cores>: OpenBLAS's own default (train_mnist.py then
              leaves the threads alone), what every run did before the adaptive policy;
  one         OPENBLAS_NUM_THREADS=1 in every process;
  torch       the same model, data, batches and optimizer in PyTorch, its default threads;
  torch-one   the same with OMP_NUM_THREADS=1 (PyTorch's intra-op threads).
The PyTorch runs need a Python with torch and pandas installed: this one, or another
given by --torch-python. Policies run
interleaved, round after round; figures are medians (min-max) over the rounds. Run it on an
otherwise idle machine: it prints the load average before and after. --root runs the
train_mnist.py of another checkout (e.g. an older version, for a before-and-after table).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from flags import OneLineParser, whole_number  # noqa: E402
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
POLICIES = {     # name: (what runs, thread variables set in every process, table label)
    "all": ("nn", {"OPENBLAS_NUM_THREADS": str(os.cpu_count())},
            f"nn.py, OpenBLAS's default threads ({os.cpu_count()})"),
    "one": ("nn", {"OPENBLAS_NUM_THREADS": "1"}, "nn.py, OPENBLAS_NUM_THREADS=1"),
    "adaptive": ("nn", {}, "nn.py, adaptive threads (train_mnist.py's default)"),
    "torch": ("torch", {}, "PyTorch, its default threads"),
    "torch-one": ("torch", {"OMP_NUM_THREADS": "1"}, "PyTorch, OMP_NUM_THREADS=1"),
}


def command(kind, args):
    limits = ["--limit", str(args.limit), "--epochs", str(args.epochs),
              "--val-size", str(args.val_size)]
    if kind == "nn":
        return [sys.executable, os.path.join(args.root, "train_mnist.py"), *limits, "--quiet"]
    return [args.torch_python, os.path.abspath(__file__), "--torch-run", *limits]


def environment(variables):
    """This process's environment without any thread setting, then the policy's."""
    env = {name: value for name, value in os.environ.items() if name not in THREAD_VARIABLES}
    env.update(variables)
    return env


def timed_runs(argv, env, copies, folder):
    """Start `copies` identical processes at once; the seconds each took from start to exit."""
    start = time.perf_counter()
    processes = [subprocess.Popen(argv, env=env, cwd=folder, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    seconds = [None] * copies
    while None in seconds:
        for i, process in enumerate(processes):
            if seconds[i] is None and process.poll() is not None:
                seconds[i] = time.perf_counter() - start
        time.sleep(0.01)
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            sys.exit(f"error: {' '.join(argv)} exited with status {process.returncode}:\n"
                     f"{out}{err}")
    return seconds


def summary(values):
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def has_torch(python):
    """Whether `python` runs and can import torch and pandas."""
    try:
        return subprocess.run([python, "-c", "import torch, pandas"], capture_output=True,
                              timeout=120).returncode == 0
    except OSError:                           # no such program
        return False


def main():
    parser = OneLineParser(description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=whole_number(1), default=3, help="runs of each kind")
    parser.add_argument("--policies", default="all,one,adaptive,torch,torch-one",
                        help=f"comma-separated, of: {', '.join(POLICIES)}")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with torch and pandas installed; the torch policies are "
                             "skipped if it has none")
    parser.add_argument("--limit", type=whole_number(2), default=20000, help="training rows read")
    parser.add_argument("--epochs", type=whole_number(1), default=2)
    parser.add_argument("--val-size", type=whole_number(1), default=2000)
    parser.add_argument("--root", default=ROOT, help="the checkout whose train_mnist.py runs")
    parser.add_argument("--torch-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.val_size >= args.limit:
        parser.error(f"--val-size {args.val_size} leaves nothing of --limit {args.limit} to train")
    if not os.path.isfile(os.path.join(args.root, "train_mnist.py")):
        parser.error(f"--root {args.root} holds no train_mnist.py")
    if args.torch_run:
        return torch_run(args)
    policies = args.policies.split(",")
    unknown = [name for name in policies if name not in POLICIES]
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    if not has_torch(args.torch_python):
        skipped = [name for name in policies if POLICIES[name][0] == "torch"]
        policies = [name for name in policies if name not in skipped]
        if skipped:
            print(f"{args.torch_python} has no torch and pandas: skipping {', '.join(skipped)}")

    args.root = os.path.abspath(args.root)
    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}; "
          f"train_mnist.py of {args.root}")
    print(f"each run: python train_mnist.py {' '.join(command('nn', args)[2:])} (or the same "
          f"in PyTorch); seconds from start to exit, median (min-max) of {args.rounds} "
          f"rounds\n", flush=True)
    times = {(name, copies): [] for name in policies for copies in (1, 3)}
    for _ in range(args.rounds):
        for name in policies:
            kind, variables, _ = POLICIES[name]
            for copies in (1, 3):
                seconds = timed_runs(command(kind, args), environment(variables), copies,
                                     args.root)
                times[name, copies].append(statistics.median(seconds))
    print("| run | alone s | beside two copies s | beside / alone |")
    print("| --- | --- | --- | --- |")
    for name in policies:
        alone, beside = times[name, 1], times[name, 3]
        ratios = [b / a for a, b in zip(alone, beside)]
        print(f"| {POLICIES[name][2]} | {summary(alone)} | {summary(beside)} | "
              f"{summary(ratios)}x |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def torch_run(args):
    """train_mnist.py's default MLP run, in PyTorch: 784-256-128-10 with ReLU, SGD with
    momentum 0.9 and lr 0.1 decayed by 0.8 each epoch, batches of 128, each training image
    moved by up to 1 pixel at random (--augment 1), validation after every epoch, then the
    test set. Prints the test accuracy."""
    import numpy as np
    import pandas as pd
    import torch

    def read(path, rows=None):
        values = pd.read_csv(path, header=None, nrows=rows).to_numpy(np.uint8)
        return (torch.from_numpy(values[:, 1:].astype(np.float32) / 255),
                torch.from_numpy(values[:, 0].astype(np.int64)))

    X, y = read(os.path.join(ROOT, "data", "mnist_train.csv.gz"), args.limit)
    X_test, y_test = read(os.path.join(ROOT, "data", "mnist_test.csv.gz"))
    X_train, y_train = X[:-args.val_size], y[:-args.val_size]
    X_val, y_val = X[-args.val_size:], y[-args.val_size:]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.8)
    loss_function = torch.nn.CrossEntropyLoss()

    def shifted(images):
        """Each 28x28 image moved by its own random (down, right) in -1..1, zeros filling in."""
        padded = torch.nn.functional.pad(images.view(-1, 28, 28), (1, 1, 1, 1))
        shifts = torch.randint(0, 3, (len(images), 2))
        moved = torch.empty(len(images), 28, 28)
        for down in range(3):
            for right in range(3):
                chosen = (shifts[:, 0] == down) & (shifts[:, 1] == right)
                moved[chosen] = padded[chosen, down:down + 28, right:right + 28]
        return moved.view(-1, 784)

    def accuracy(X, y):
        model.eval()
        with torch.no_grad():
            right = sum(int((model(X[i:i + 128]).argmax(1) == y[i:i + 128]).sum())
                        for i in range(0, len(X), 128))
        model.train()
        return right / len(X)

    for _ in range(args.epochs):
        order = torch.randperm(len(X_train))
        for first in range(0, len(X_train), 128):
            rows = order[first:first + 128]
            optimizer.zero_grad()
            loss_function(model(shifted(X_train[rows])), y_train[rows]).backward()
            optimizer.step()
        schedule.step()
        accuracy(X_val, y_val)
    print(f"test accuracy: {accuracy(X_test, y_test):.2%}")


if __name__ == "__main__":
    main()

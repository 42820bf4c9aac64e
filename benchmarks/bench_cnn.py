"""How fast does nn.py train a convolutional network on MNIST, next to PyTorch on the same CPU?

    python benchmarks/bench_cnn.py                  # both models, 5 rounds; a Markdown table
    python benchmarks/bench_cnn.py --rounds 3 --models small --no-torch

For each model it times one training epoch over all 60,000 MNIST images (float32, already in
memory, batch 64, SGD with momentum 0.9, lr 0.01, softmax + cross-entropy) of:
  nn.py    the network built from nn.py's layers, trained by nn.py;
  PyTorch  the same architecture, layout (batch, channels, height, width), batches, loss and
           optimizer (only when torch is installed).
Models (3x3 kernels, padding 1, 2x2 max-pooling, ReLU after every convolution and hidden layer):
  small    conv 8 -> pool -> conv 16 -> pool -> 64 -> 10
  cnn      the network of `python train_mnist.py --model cnn`
Both sides use the machine's cores (NumPy through its BLAS, PyTorch through its own threads).
They run interleaved, round after round, after a warm-up round, and each ratio is taken within
a round, so a slow moment of a shared machine affects both sides of a ratio alike.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import nn  # noqa: E402
from nn import SGD, Dense, ReLU, Softmax, one_hot  # noqa: E402
from train_mnist import DEFAULT_TRAIN, load_mnist_csv  # noqa: E402
from bench_mlp import blas_description  # noqa: E402  (this script's folder)

# --- TEMPORARY fallback, DELETE once nn.py has the convolutional layers: until then they come
# --- from the scratch module where they are being written.
if hasattr(nn, "Conv2D"):
    from nn import Conv2D, Flatten, MaxPool2D, Reshape  # noqa: E402
    LAYERS_FROM = "nn.py"
else:
    sys.path.insert(0, "/work/scratch/cnn")
    from cnn_layers import Conv2D, Flatten, MaxPool2D, Reshape  # noqa: E402
    LAYERS_FROM = "scratch cnn_layers.py (fallback)"
# --- end of the temporary fallback

try:
    import torch
except ImportError:
    torch = None

# name: (channels of each convolution, width of the hidden Dense layer)
MODELS = {"small": ((8, 16), 64),
          "cnn": ((16, 32), 128)}


def nn_layers(channels, hidden, seed=0):
    """Reshape, then (Conv2D, ReLU, MaxPool2D) per entry of channels, Flatten, Dense, Softmax;
    layer number i (counting only layers with weights) is seeded with seed + i."""
    layers, size, previous = [Reshape((1, 28, 28))], 28, 1
    for number, out_channels in enumerate(channels):
        layers += [Conv2D(previous, out_channels, 3, padding=1, seed=seed + number), ReLU(),
                   MaxPool2D(2)]
        previous, size = out_channels, size // 2
    layers += [Flatten(), Dense(previous * size * size, hidden, seed=seed + len(channels)), ReLU(),
               Dense(hidden, 10, seed=seed + len(channels) + 1, init="glorot"), Softmax()]
    return layers


def nn_epoch_runner(layers, X, Y, batch_size, lr, momentum):
    network = nn.Network(layers, loss="categorical_crossentropy")
    optimizer = SGD(lr=lr, momentum=momentum)
    seeds = iter(range(10**6))

    def epoch():
        start = time.perf_counter()
        network.fit(X, Y, epochs=1, batch_size=batch_size, optimizer=optimizer, seed=next(seeds),
                    verbose=0)
        return time.perf_counter() - start
    return epoch


def torch_epoch_runner(channels, hidden, X, labels, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    modules, size, previous = [], 28, 1
    for out_channels in channels:
        modules += [torch.nn.Conv2d(previous, out_channels, 3, padding=1), torch.nn.ReLU(),
                    torch.nn.MaxPool2d(2)]
        previous, size = out_channels, size // 2
    modules += [torch.nn.Flatten(), torch.nn.Linear(previous * size * size, hidden),
                torch.nn.ReLU(), torch.nn.Linear(hidden, 10)]   # softmax lives inside the loss
    model = torch.nn.Sequential(*modules)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_function = torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X).view(-1, 1, 28, 28), torch.from_numpy(labels)
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


def describe(channels, hidden):
    convolutions = " -> pool -> ".join(f"conv {c}" for c in channels)
    return f"{convolutions} -> pool -> {hidden} -> 10"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of each kind")
    parser.add_argument("--models", default="small,cnn", help=f"among {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = parser.parse_args()
    use_torch = torch is not None and not args.no_torch
    names = args.models.split(",")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose among {', '.join(MODELS)}")

    X, labels = load_mnist_csv(DEFAULT_TRAIN)
    Y = one_hot(labels, 10)
    lr, momentum = 0.01, 0.9

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, NumPy {np.__version__}"
          + (f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
             if use_torch else ", PyTorch not installed or skipped (column left out)"))
    print(f"BLAS: {blas_description()}; layers from {LAYERS_FROM}")
    print(f"one epoch = {len(X):,} images, float32, batch {args.batch_size}, SGD(lr={lr}, "
          f"momentum={momentum}); seconds as median (min-max) of {args.rounds} rounds after 1 "
          f"warm-up; ratios taken within each round\n")
    header, rule = "| model | nn.py s |", "| --- | --- |"
    if use_torch:
        header += " PyTorch s | nn.py / PyTorch |"
        rule += " --- | --- |"
    print(header)
    print(rule, flush=True)
    for name in names:
        channels, hidden = MODELS[name]
        runners = {"nn": nn_epoch_runner(nn_layers(channels, hidden), X, Y, args.batch_size, lr,
                                         momentum)}
        if use_torch:
            runners["torch"] = torch_epoch_runner(channels, hidden, X, labels, args.batch_size,
                                                  lr, momentum, 0)
        times = {key: [] for key in runners}
        for round_number in range(args.rounds + 1):      # round 0 is the warm-up
            for key, runner in runners.items():
                seconds = runner()
                if round_number:
                    times[key].append(seconds)
        nn_times = np.array(times["nn"])
        row = f"| {name}: {describe(channels, hidden)} | {summary(nn_times)} |"
        if use_torch:
            torch_times = np.array(times["torch"])
            row += f" {summary(torch_times)} | {summary(nn_times / torch_times)} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()

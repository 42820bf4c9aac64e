"""How fast does nn.py train a convolutional network on MNIST, next to its matrix products alone
and to PyTorch on the same CPU?

    python benchmarks/bench_cnn.py                  # small and cnn, 5 rounds (about 3 minutes)
    python benchmarks/bench_cnn.py --rounds 3 --models small --no-torch
    python benchmarks/bench_cnn.py --models cnn,cnn-batchnorm    # what BatchNorm costs

For each model it times one training epoch over all 60,000 MNIST images (float32, already in
memory, batch 64, SGD with momentum 0.9, lr 0.01, softmax + cross-entropy) of:
  nn.py      the network built from nn.py's layers, trained by nn.py;
  GEMM-only  the matrix products of that epoch, at the same shapes, and nothing else;
  PyTorch    the same architecture, layout (batch, channels, height, width), batches, loss and
             optimizer (only when torch is installed).
Models:
  small      conv 8 -> pool -> conv 16 -> pool -> 64 -> 10 (3x3 kernels, padding 1, 2x2
             max-pooling, ReLU after each convolution and the hidden layer)
  cnn        the network of `python train_mnist.py --model cnn`, built by train_mnist.py itself
  cnn-batchnorm  the same with --batchnorm (BatchNorm before each ReLU; PyTorch's twin has
             BatchNorm2d after the convolutions, BatchNorm1d after the hidden Dense layer)
The PyTorch network is built from the nn.py one, layer by layer (torch_twin).
Both sides use all the machine's cores (nn.py through fit(workers=N), N processes sharing each
batch; PyTorch through its own threads), or as many as OPENBLAS_NUM_THREADS says, for both:
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cnn.py     # one core each
    python benchmarks/bench_cnn.py --workers 1,2              # nn.py in 1 and in 2 processes
They run interleaved, round after round, after a warm-up round, and each ratio is taken within
a round, so a slow moment of a shared machine affects both sides of a ratio alike.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import nn  # noqa: E402
import train_mnist  # noqa: E402
import outputs  # noqa: E402
from flags import OneLineParser, whole_number  # noqa: E402
from nn import SGD, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Reshape, Softmax  # noqa: E402
# bench_mlp.py, in this folder, imports torch if it is installed (else torch is None)
from bench_mlp import mnist_and_header, summary, torch, torch_epoch  # noqa: E402


def small_cnn(seed=0):
    """conv 8 -> pool -> conv 16 -> pool -> 64 -> 10; layer i with weights seeded seed + i."""
    return [Reshape((1, 28, 28)),
            Conv2D(1, 8, 3, padding=1, seed=seed), ReLU(), MaxPool2D(2),
            Conv2D(8, 16, 3, padding=1, seed=seed + 1), ReLU(), MaxPool2D(2),
            Flatten(), Dense(16 * 7 * 7, 64, seed=seed + 2), ReLU(),
            Dense(64, 10, seed=seed + 3, init="glorot"), Softmax()]


def recipe_cnn(*flags):
    """The layers of `python train_mnist.py --model cnn` with its default flags, and `flags`."""
    return train_mnist.build_cnn(train_mnist.parse_args(["--model", "cnn", *flags])).layers


MODELS = {"small": small_cnn, "cnn": recipe_cnn,
          "cnn-batchnorm": lambda: recipe_cnn("--batchnorm")}


def nn_epoch_runner(layers, X, Y, batch_size, lr, momentum, workers):
    network = nn.Network(layers, loss="categorical_crossentropy")
    optimizer = SGD(lr=lr, momentum=momentum)
    seeds = iter(range(10**6))

    def epoch():
        start = time.perf_counter()
        network.fit(X, Y, epochs=1, batch_size=batch_size, optimizer=optimizer, seed=next(seeds),
                    verbose=0, workers=workers)
        return time.perf_counter() - start
    return epoch


def gemm_only_epoch_runner(layers, n, batch_size):
    """A function that runs the matrix products of one nn.py epoch of `layers` and nothing else,
    at the same shapes and dtype: each Conv2D computes kernels @ columns and each Dense
    input @ weights, so for every batch and such layer, forward A @ B and backward G @ B.T
    (dL/dA) and A.T @ G (dL/dB), the input's gradient skipped where nn.py skips it. The
    practical limit for any im2col NumPy implementation."""
    network = nn.Network(layers)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    products = {}                            # batch size -> [(a, b, out or None), ...]
    for size in set(sizes):
        network.forward(np.zeros((size, 28 * 28), np.float32))    # the layers' shapes
        products[size] = []
        for layer in network.layers:
            if isinstance(layer, Conv2D):    # the input is B (its columns)
                A, B = layer.weights.reshape(layer.out_channels, -1), layer.columns
                input_is_a = False
            elif isinstance(layer, Dense):   # the input is A
                A, B, input_is_a = layer.input, layer.weights, True
            else:
                continue
            A, B = A.copy(), B.copy()
            G = np.ones((A.shape[0], B.shape[1]), A.dtype)           # dL/d(A @ B)
            grad_a, grad_b = (G, B.T, A), (A.T, G, B)    # each with its result's shape
            weights, inputs = (grad_b, grad_a) if input_is_a else (grad_a, grad_b)
            products[size] += [(A, B, None),             # nn.py writes the weights' gradient
                               weights[:2] + (np.empty_like(weights[2]),)]    # in place
            if layer.input_gradient_needed:
                products[size].append(inputs[:2] + (None,))

    def epoch():
        start = time.perf_counter()
        for size in sizes:
            for a, b, out in products[size]:
                np.matmul(a, b, out=out)
        return time.perf_counter() - start
    return epoch


def torch_twin(layers):
    """The PyTorch network with the same architecture as nn.py's `layers` (fresh weights)."""
    modules, images = [], False              # images: (batch, channels, height, width) here
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Reshape":
            modules.append(torch.nn.Unflatten(1, layer.shape))
            images = len(layer.shape) == 3
        elif kind == "BatchNorm":
            batchnorm = torch.nn.BatchNorm2d if images else torch.nn.BatchNorm1d
            modules.append(batchnorm(layer.n, eps=layer.eps, momentum=layer.momentum))
        elif kind == "Conv2D":
            modules.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels,
                                           layer.kernel_size, stride=layer.stride,
                                           padding=layer.padding))
        elif kind == "MaxPool2D":
            modules.append(torch.nn.MaxPool2d(layer.size))
        elif kind == "Flatten":
            modules.append(torch.nn.Flatten())
            images = False
        elif kind == "Dense":
            modules.append(torch.nn.Linear(*layer.weights.shape))
        elif kind == "ReLU":
            modules.append(torch.nn.ReLU())
        elif kind == "Dropout":
            modules.append(torch.nn.Dropout(layer.rate))
        elif kind == "Softmax" and layer is layers[-1]:
            pass                                          # softmax lives inside the loss
        else:
            raise ValueError(f"no PyTorch twin for {layer!r}")
    return torch.nn.Sequential(*modules)


def torch_epoch_runner(layers, X, labels, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    return torch_epoch(torch_twin(layers), X, labels, batch_size, lr, momentum, seed)


def main():
    parser = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=whole_number(1), default=5,
                        help="timed epochs of each kind")
    parser.add_argument("--models", default="small,cnn", help=f"among {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=whole_number(1), default=64)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--workers", help="nn.py's fit(workers=...), processes sharing each "
                                          "batch; several (e.g. 1,2) time nn.py once for each, "
                                          "in the same rounds (default: the cores BLAS may use)")
    args = parser.parse_args()
    try:
        cores = whole_number(1)(os.environ.get("OPENBLAS_NUM_THREADS", str(os.cpu_count())))
    except argparse.ArgumentTypeError as error:
        parser.error(f"OPENBLAS_NUM_THREADS: {error}")
    use_torch = torch is not None and not args.no_torch
    if use_torch:
        torch.set_num_threads(cores)
    names = args.models.split(",")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose among {', '.join(MODELS)}")
    workers = args.workers or str(min(cores, nn.max_workers()))
    try:
        worker_counts = [whole_number(1, nn.max_workers(), "(the cores here)")(text)
                         for text in workers.split(",")]
    except argparse.ArgumentTypeError as error:
        parser.error(f"--workers: {error}")

    lr, momentum = 0.01, 0.9
    X, labels, Y = mnist_and_header(
        use_torch, f", batch {args.batch_size}, SGD(lr={lr}, momentum={momentum})", args.rounds)
    nn_keys = [f"nn.py workers={count}" for count in worker_counts]
    columns = [f"{key} s" for key in nn_keys] + ["GEMM-only s"]
    columns += [f"{key} / GEMM-only" for key in nn_keys]
    if use_torch:
        columns += ["PyTorch s"] + [f"{key} / PyTorch" for key in nn_keys]
    if len(nn_keys) > 1:
        columns.append(f"{nn_keys[-1]} / {nn_keys[0]}")
    print("| model | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns), flush=True)
    for name in names:
        runners = {key: nn_epoch_runner(MODELS[name](), X, Y, args.batch_size, lr, momentum,
                                        count)
                   for key, count in zip(nn_keys, worker_counts)}
        layers = MODELS[name]()
        runners["GEMM-only"] = gemm_only_epoch_runner(layers, len(X), args.batch_size)
        if use_torch:
            runners["PyTorch"] = torch_epoch_runner(layers, X, labels, args.batch_size, lr,
                                                    momentum, 0)
        times = {key: [] for key in runners}
        for round_number in range(args.rounds + 1):      # round 0 is the warm-up
            for key, runner in runners.items():
                seconds = runner()
                if round_number:
                    times[key].append(seconds)
        times = {key: np.array(values) for key, values in times.items()}
        cells = [summary(times[key]) for key in nn_keys] + [summary(times["GEMM-only"])]
        cells += [summary(times[key] / times["GEMM-only"]) for key in nn_keys]
        if use_torch:
            cells += [summary(times["PyTorch"])]
            cells += [summary(times[key] / times["PyTorch"]) for key in nn_keys]
        if len(nn_keys) > 1:
            cells.append(summary(times[nn_keys[-1]] / times[nn_keys[0]]))
        print(f"| {name}: {outputs.layer_chain(nn.Network(layers))} | " + " | ".join(cells)
              + " |", flush=True)


if __name__ == "__main__":
    main()

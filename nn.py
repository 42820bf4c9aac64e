"""nn: a complete neural-network framework in one readable file of Python and NumPy.

Read it top to bottom: layers, activations, losses, the network that chains them, and the
optimizer that learns. Every backward pass is derived in a comment next to its code.

Conventions used everywhere in this file
- Data is batch-first: X has shape (batch, features), one example per row.
- A Dense layer computes  X @ weights + biases  with weights (n_in, n_out) and biases (n_out,).
- Targets Y are one-hot rows: shape (batch, classes); `one_hot(labels, n_classes)` makes them.
- layer.forward(x) returns the layer's output and remembers what backward needs.
  layer.backward(grad_output) takes dL/d(output) and returns dL/d(input): the chain rule,
  one layer at a time. Dense.backward also stores dL/d(weights) and dL/d(biases).
- Every loss is a mean over the batch, and its `_prime` is exactly the gradient of that mean.
- Only the optimizer (SGD) changes parameters.
- The network computes in the dtype of its data: float32 data trains in float32 (fast),
  float64 data in float64 (for gradient checks).
"""

import json
import os
import sys
import tempfile
import time

import numpy as np


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

class Layer:
    """One step of the network: forward computes, backward applies the chain rule."""

    def forward(self, x):
        """Return the output for a batch x (batch, ...) and remember what backward needs."""
        raise NotImplementedError

    def backward(self, grad_output):
        """Given dL/d(output), return dL/d(input), of the same shape as the input."""
        raise NotImplementedError

    def parameters(self):
        """(parameter, gradient) pairs for the optimizer; layers without weights have none."""
        return []

    def __repr__(self):
        return f"{type(self).__name__}()"


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")


class Dense(Layer):
    """A fully connected layer: output = input @ weights + biases.

    Shapes: input (batch, n_in), weights (n_in, n_out), biases (n_out,), output (batch, n_out).

    init="he" (the default) suits ReLU: weights ~ Normal(0, 2 / n_in). ReLU zeroes about half of
    its inputs, so doubling the plain 1 / n_in variance keeps the size of the signal the same from
    layer to layer, and a deep ReLU net starts neither vanishing nor exploding.
    init="glorot" suits sigmoid (and the layer before softmax): Normal(0, 2 / (n_in + n_out))
    balances the signal going forward and the gradient coming back.
    """

    def __init__(self, n_in, n_out, seed=None, init="he", dtype=np.float32):
        _check_positive_int(n_in, "Dense n_in (number of inputs)")
        _check_positive_int(n_out, "Dense n_out (number of outputs)")
        if init not in ("he", "glorot"):
            raise ValueError(f"Dense init must be 'he' or 'glorot', got {init!r}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        variance = 2.0 / n_in if init == "he" else 2.0 / (n_in + n_out)
        rng = np.random.default_rng(seed)
        self.weights = (rng.standard_normal((n_in, n_out)) * np.sqrt(variance)).astype(dtype)
        self.biases = np.zeros(n_out, dtype=dtype)
        self.grad_weights = np.zeros_like(self.weights)
        self.grad_biases = np.zeros_like(self.biases)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"{self!r} expects input of shape (batch, {self.n_in}), "
                             f"got shape {x.shape}")
        self.input = x                       # backward needs it for dL/d(weights)
        output = x @ self.weights            # (batch, n_in) @ (n_in, n_out) -> (batch, n_out)
        output += self.biases                # in place: one array fewer; biases broadcast over rows
        return output

    def backward(self, grad_output, need_input_grad=True):
        # output[b, j] = sum_i input[b, i] * weights[i, j] + biases[j], so by the chain rule:
        #   dL/dweights[i, j] = sum_b input[b, i] * grad_output[b, j]  ->  input.T @ grad_output
        #   dL/dbiases[j]     = sum_b grad_output[b, j]                 ->  summed over rows
        #   dL/dinput[b, i]   = sum_j grad_output[b, j] * weights[i, j] ->  grad_output @ weights.T
        # Each parameter is used by every example, so its gradient sums over the batch.
        np.matmul(self.input.T, grad_output, out=self.grad_weights)  # write in place: no new array
        grad_output.sum(axis=0, out=self.grad_biases)
        if not need_input_grad:              # the first layer's input is the data: nobody needs
            return None                      # its gradient, and skipping it saves a matrix product
        return grad_output @ self.weights.T  # (batch, n_out) @ (n_out, n_in) -> (batch, n_in)

    def parameters(self):
        return [(self.weights, self.grad_weights), (self.biases, self.grad_biases)]

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"


class Activation(Layer):
    """A layer without weights that applies a fixed function: output = f(input), same shape.

    Most activations (ReLU, sigmoid) work on each number on its own: output[b, i] depends only
    on input[b, i], so the chain rule has a single term,
        dL/dinput = dL/doutput * f'(input)        (element by element),
    and subclasses just give f (`function`) and f' (`derivative`). Softmax mixes the numbers
    of a row, so it brings its own backward. All three derivatives can be written with the
    output alone, so the output is all that forward remembers.
    """

    def forward(self, x):
        self.output = self.function(x)
        return self.output

    def backward(self, grad_output):
        with np.errstate(under="ignore"):    # a product of tiny numbers may round to 0: harmless
            return grad_output * self.derivative()

    def function(self, x):
        raise NotImplementedError

    def derivative(self):
        """f' at the inputs of the last forward call, from self.output."""
        raise NotImplementedError


class ReLU(Activation):
    """ReLU(x) = max(x, 0); its slope is 1 where x > 0 and 0 elsewhere (we take 0 at x = 0).

    x > 0 exactly where ReLU(x) > 0, so the slope can be read off the output.
    """

    def function(self, x):
        return np.maximum(x, 0)

    def derivative(self):
        return self.output > 0               # booleans multiply as 1 and 0, keeping the dtype


class Sigmoid(Activation):
    """sigmoid(x) = 1 / (1 + exp(-x)), squashing any number into (0, 1).

    sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x)), so backward needs only the remembered output.
    """

    def function(self, x):
        # exp(-x) overflows for x << 0, so use the form whose exponent is never positive:
        #   x >= 0: 1 / (1 + exp(-x))        x < 0: exp(x) / (1 + exp(x))   (the same value)
        with np.errstate(under="ignore"):    # exp(-1e4) rounds to 0: the right answer, no warning
            e = np.exp(-np.abs(x))
            return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def derivative(self):
        return self.output * (1 - self.output)


class Softmax(Activation):
    """softmax(z)[b, j] = exp(z[b, j]) / sum_k exp(z[b, k]): each row becomes probabilities.

    Unlike ReLU and Sigmoid, every output of a row depends on every input of the row, so its
    backward is a Jacobian-vector product rather than an element-wise product.
    """

    def function(self, z):
        # softmax(z) = softmax(z - c) for any c; with c = the row's largest value every exponent
        # is <= 0, so exp cannot overflow, and the largest term is exp(0) = 1, so no division by 0.
        with np.errstate(under="ignore"):    # exp(-1e4) rounds to 0: the right answer, no warning
            exps = np.exp(z - z.max(axis=1, keepdims=True))
            return exps / exps.sum(axis=1, keepdims=True)

    def backward(self, grad_output):
        # With p = softmax(z) for one row, the Jacobian is dp[i]/dz[j] = p[i] * (delta_ij - p[j]).
        # Backward needs dL/dz[j] = sum_i grad_output[i] * dp[i]/dz[j]
        #                         = p[j] * (grad_output[j] - sum_i grad_output[i] * p[i]).
        # So: one dot product per row, then an element-wise product. The (classes, classes)
        # Jacobian is never built; this works for any loss placed after the softmax.
        p = self.output
        with np.errstate(under="ignore"):    # products of tiny probabilities may round to 0
            row_dot = np.sum(grad_output * p, axis=1, keepdims=True)     # (batch, 1)
            return p * (grad_output - row_dot)


# ----------------------------------------------------------------------------------------------
# Losses: a number that says how wrong the predictions are, and its gradient
# ----------------------------------------------------------------------------------------------

def mse(y_true, y_pred):
    """Mean squared error: the mean over every element of (y_pred - y_true)^2."""
    return float(np.mean((y_pred - y_true) ** 2))


def mse_prime(y_true, y_pred):
    """d mse / d y_pred = 2 (y_pred - y_true) / (number of elements)."""
    return 2 * (y_pred - y_true) / y_pred.size


def _no_zeros(p):
    # log(0) = -inf and 1/0 = inf; the smallest normal float of p's dtype keeps both finite
    # (-87 for float32) and is far below any probability that matters.
    return np.maximum(p, np.finfo(p.dtype).tiny)


def categorical_crossentropy(y_true, y_pred):
    """Mean over the batch of -sum_j y_true[j] * log(y_pred[j]), for probabilities y_pred."""
    return float(-(y_true * np.log(_no_zeros(y_pred))).sum() / len(y_pred))


def categorical_crossentropy_prime(y_true, y_pred):
    """d crossentropy / d y_pred = -y_true / (y_pred * batch)."""
    return -y_true / (_no_zeros(y_pred) * len(y_pred))


LOSSES = {
    "categorical_crossentropy": (categorical_crossentropy, categorical_crossentropy_prime),
    "mse": (mse, mse_prime),
}


def one_hot(labels, n_classes, dtype=np.float32):
    """Integer labels (n,) -> one-hot rows (n, n_classes): row i has a 1 in column labels[i].

    The default float32 matches the training data; a float64 one-hot would silently make
    every float32 gradient float64 and training twice as slow.
    """
    _check_positive_int(n_classes, "n_classes")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class numbers, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        whole = np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))
        if not whole:
            raise ValueError(f"labels must be whole numbers 0..{n_classes - 1}, "
                             f"got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= n_classes)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"labels must be whole numbers 0..{n_classes - 1}, "
                         f"got {labels[i]} at index {i}")
    encoded = np.zeros((labels.size, n_classes), dtype=dtype)
    encoded[np.arange(labels.size), labels.astype(np.intp)] = 1
    return encoded


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

# What Network.save writes: these layer kinds, and a format marker that load checks.
MODEL_FORMAT = "nn.Network v1"
LAYER_TYPES = {"Dense": Dense, "ReLU": ReLU, "Sigmoid": Sigmoid, "Softmax": Softmax}


def _require(condition, what):
    if not condition:
        raise ValueError(f"wrong {what}")


class Network:
    """A stack of layers trained with a loss: Keras-like fit, evaluate, predict, save, load."""

    def __init__(self, layers, loss="categorical_crossentropy"):
        layers = list(layers)
        if not layers:
            raise ValueError("Network needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"layer {i} must be a Layer (e.g. Dense, ReLU), got {layer!r}")
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("Network needs at least one Dense layer")
        for before, after in zip(dense, dense[1:]):
            if before.n_out != after.n_in:
                raise ValueError(f"{after!r} follows {before!r}, so its n_in must be "
                                 f"{before.n_out}, got {after.n_in}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(sorted(LOSSES))}")
        self.layers = layers
        self.flat = None                     # all parameters in one array: see _pack_parameters
        self.loss_name = loss
        self.loss, self.loss_prime = LOSSES[loss]
        self.n_inputs, self.n_outputs = dense[0].n_in, dense[-1].n_out
        # Softmax followed by cross-entropy: see backward for why this pair is treated together.
        self.softmax_crossentropy = (isinstance(layers[-1], Softmax)
                                     and loss == "categorical_crossentropy")

    def __repr__(self):
        return f"Network({self.layers!r}, loss={self.loss_name!r})"

    def count_params(self):
        return sum(param.size for param, _ in self.parameters())

    # -- forward and backward ------------------------------------------------------------------

    def forward(self, X):
        """Run a batch X (batch, n_inputs) through every layer; returns (batch, n_outputs)."""
        with np.errstate(under="ignore"):    # numbers below ~1e-38 rounding to 0 is harmless
            for layer in self.layers:
                X = layer.forward(X)
        return X

    def backward(self, Y, P):
        """Fill every layer's gradients for targets Y and the predictions P of the last forward.

        The loss gradient dL/dP enters the last layer, and each layer's backward hands
        dL/d(its input) to the layer before it: the chain rule, from the loss back to the data.
        """
        layers = self.layers
        with np.errstate(under="ignore"):    # numbers below ~1e-38 rounding to 0 is harmless
            if self.softmax_crossentropy:
                # With p = softmax(z) and L = -sum(y * log p) / N, the loss gives
                # g = dL/dp = -y / (p N), and Softmax.backward would return p * (g - sum(g * p)).
                # Here p * g = -y / N and, as each row of y sums to 1, sum(g * p) = -1 / N.
                # So the chain rule simplifies to
                #     dL/dz = (p - y) / N.
                # Computed in this form it stays exact even when the network is confidently
                # wrong: the general route divides y by p ~ 0 (overflowing, or clipped and
                # wrong) and then multiplies by p again. It is also one cheap subtraction
                # instead of several passes.
                grad = (P - Y) / len(P)
                layers = layers[:-1]         # the gradient is already at the softmax's input
            else:
                grad = self.loss_prime(Y, P)
            for i in range(len(layers) - 1, -1, -1):
                if i == 0 and isinstance(layers[0], Dense):
                    layers[0].backward(grad, need_input_grad=False)
                else:
                    grad = layers[i].backward(grad)

    def train_on_batch(self, X, Y, optimizer):
        """One step of gradient descent on one batch; returns (loss, number of correct rows)."""
        P = self.forward(X)
        loss = self.loss(Y, P)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss}: the weights have diverged. "
                f"Try a smaller learning rate (lr is {optimizer.lr}).")
        self.backward(Y, P)
        optimizer.step(self.parameters())
        return loss, int(np.count_nonzero(P.argmax(axis=1) == Y.argmax(axis=1)))

    # -- checking what the user gives us --------------------------------------------------------

    def _check_X(self, X, name="X"):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (examples, {self.n_inputs} features), "
                             f"got shape {X.shape}")
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"{name} must have {self.n_inputs} columns, one per input of "
                             f"{self.layers[0]!r}, got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} has no rows")
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float32)         # integers (e.g. pixels) and float16 -> float32
        # Rows must lie contiguously in memory: taking a batch of rows from a column-major array
        # (what pandas' to_numpy() often returns) is over ten times slower. Copies only if needed.
        X = np.ascontiguousarray(X)
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{name} must hold finite numbers, but it contains NaN or infinity")
        return X

    def _check_XY(self, X, Y, names=("X", "Y")):
        X = self._check_X(X, names[0])
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != self.n_outputs:
            raise ValueError(f"{names[1]} must have shape (examples, {self.n_outputs}), one column "
                             f"per network output (one_hot(labels, {self.n_outputs}) makes it), "
                             f"got shape {Y.shape}")
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"{names[0]} and {names[1]} must have the same number of rows, "
                             f"got {X.shape[0]} and {Y.shape[0]}")
        if not np.issubdtype(Y.dtype, np.number) or not np.all(np.isfinite(Y)):
            raise ValueError(f"{names[1]} must hold finite numbers")
        return X, Y.astype(X.dtype, copy=False)   # same dtype as X: no silent upcast

    # -- all parameters in one array, for a fast optimizer step ---------------------------------

    def _pack_parameters(self, dtype):
        """Move every parameter into one long array of `dtype` (the data's), and every
        gradient into another; each layer's arrays become views of their piece, so the layers
        work exactly as before. The optimizer can then update all parameters in four NumPy
        operations instead of four per array: at 0.6 ms a step, those saved calls are 3% of
        training time."""
        pairs = [pair for layer in self.layers for pair in layer.parameters()]
        flat_params = np.concatenate([param.ravel() for param, _ in pairs], dtype=dtype)
        flat_grads = np.zeros_like(flat_params)
        start = 0
        for layer in self.layers:
            if isinstance(layer, Dense):
                for name in ("weights", "biases"):
                    shape = getattr(layer, name).shape
                    end = start + int(np.prod(shape))
                    setattr(layer, name, flat_params[start:end].reshape(shape))
                    setattr(layer, "grad_" + name, flat_grads[start:end].reshape(shape))
                    start = end
        self.flat = (flat_params, flat_grads)

    def parameters(self):
        """(parameter, gradient) pairs for the optimizer: one pair of long arrays once fit
        has packed them (and no layer's array was replaced since), else one pair per array."""
        if self.flat is not None and all(param.base is self.flat[0] and grad.base is self.flat[1]
                                         for layer in self.layers
                                         for param, grad in layer.parameters()):
            return [self.flat]
        return [pair for layer in self.layers for pair in layer.parameters()]

    # -- Keras-like training and use -----------------------------------------------------------

    def fit(self, X, Y, epochs=1, batch_size=32, optimizer=None, validation_data=None,
            seed=None, verbose=1):
        """Train with mini-batch gradient descent; returns the per-epoch history dict.

        Every epoch visits the examples in a new (seeded) random order, in batches of
        batch_size (the last one may be smaller). The reported loss and accuracy are those of
        the batches as they were trained, as Keras reports them.
        """
        _check_positive_int(epochs, "epochs")
        _check_positive_int(batch_size, "batch_size")
        X, Y = self._check_XY(X, Y)
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise ValueError("validation_data must be a pair (X_val, Y_val)")
            X_val, Y_val = self._check_XY(*validation_data, names=("X_val", "Y_val"))
        if self.softmax_crossentropy and np.abs(Y.sum(axis=1) - 1).max() > 1e-3:
            raise ValueError("with Softmax and categorical_crossentropy each row of Y must sum "
                             "to 1 (one-hot labels or probabilities)")
        optimizer = SGD(lr=0.01) if optimizer is None else optimizer
        self._pack_parameters(X.dtype)       # the network computes in its data's dtype
        rng = np.random.default_rng(seed)
        n = len(X)
        show_progress = verbose and sys.stdout.isatty()
        history = {"loss": [], "accuracy": []}
        if validation_data is not None:
            history.update(val_loss=[], val_accuracy=[])

        # Diverging weights overflow; train_on_batch then stops with a clear error about the
        # non-finite loss, so NumPy's own warnings would only repeat it less clearly.
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                order = rng.permutation(n)
                loss_sum, correct = 0.0, 0
                for batch_number, first in enumerate(range(0, n, batch_size)):
                    rows = order[first:first + batch_size]
                    X_batch = X.take(rows, axis=0)   # one gather per batch (faster than X[rows])
                    Y_batch = Y.take(rows, axis=0)
                    loss, batch_correct = self.train_on_batch(X_batch, Y_batch, optimizer)
                    loss_sum += loss * len(rows)
                    correct += batch_correct
                    if show_progress and batch_number % 50 == 0:
                        print(f"\rEpoch {epoch}/{epochs} - {first + len(rows)}/{n}", end="",
                              flush=True)
                optimizer.end_epoch()
                history["loss"].append(loss_sum / n)
                history["accuracy"].append(correct / n)
                if validation_data is not None:
                    val_loss, val_accuracy = self.evaluate(X_val, Y_val)
                    history["val_loss"].append(val_loss)
                    history["val_accuracy"].append(val_accuracy)
                if verbose:
                    line = f"Epoch {epoch}/{epochs} - {time.perf_counter() - start:.1f}s"
                    for key, values in history.items():
                        line += f" - {key}: {values[-1]:.4f}"
                    print("\r" + line if show_progress else line, flush=True)
        return history

    def predict(self, X, batch_size=1000):
        """The network's outputs (n, n_outputs) for X (n, n_inputs), computed in large batches."""
        X = self._check_X(X)
        return np.concatenate([self.forward(X[i:i + batch_size])
                               for i in range(0, len(X), batch_size)])

    def evaluate(self, X, Y, batch_size=1000):
        """(mean loss, accuracy) on X and one-hot Y; accuracy compares the largest outputs."""
        X, Y = self._check_XY(X, Y)
        P = self.predict(X, batch_size)
        accuracy = float(np.count_nonzero(P.argmax(axis=1) == Y.argmax(axis=1)) / len(X))
        return self.loss(Y, P), accuracy

    # -- saving and loading --------------------------------------------------------------------

    def save(self, path):
        """Write the architecture and parameters to a .npz file, all or nothing.

        The file is written under a temporary name in the same folder and then renamed over
        `path` in one step, so a crash or error mid-save never leaves a half-written model.
        """
        arrays, architecture = {}, []
        for i, layer in enumerate(self.layers):
            kind = type(layer).__name__
            if kind not in LAYER_TYPES or type(layer) is not LAYER_TYPES[kind]:
                raise ValueError(f"cannot save layer {i} ({layer!r}): only "
                                 f"{', '.join(LAYER_TYPES)} layers can be saved")
            if isinstance(layer, Dense):
                architecture.append({"type": kind, "n_in": layer.n_in, "n_out": layer.n_out})
                arrays[f"layer{i}_weights"] = layer.weights
                arrays[f"layer{i}_biases"] = layer.biases
            else:
                architecture.append({"type": kind})
        description = {"format": MODEL_FORMAT, "loss": self.loss_name, "layers": architecture}
        arrays["architecture"] = np.array(json.dumps(description))   # a plain string array

        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".nn-save-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())      # on disk before the rename makes it visible
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)      # atomic: readers see the old file or the new one
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise

    @classmethod
    def load(cls, path):
        """Rebuild a saved network from its file alone. Never unpickles anything."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {path}")
        refusal = f"{path} is not a model saved by nn.Network.save"
        try:
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except Exception as error:           # not a zip, damaged, or holds pickled objects
            raise ValueError(f"{refusal} ({error})") from None
        try:
            description = json.loads(str(arrays.pop("architecture")))
            _require(description.get("format") == MODEL_FORMAT, "format marker")
            layers = []
            for i, spec in enumerate(description["layers"]):
                kind = LAYER_TYPES[spec["type"]]
                if kind is Dense:
                    weights = arrays.pop(f"layer{i}_weights")
                    biases = arrays.pop(f"layer{i}_biases")
                    _require(weights.dtype.kind == "f" and biases.dtype == weights.dtype,
                             f"layer {i} dtype")
                    layer = Dense(spec["n_in"], spec["n_out"], dtype=weights.dtype)
                    _require(weights.shape == layer.weights.shape, f"layer {i} weights shape")
                    _require(biases.shape == layer.biases.shape, f"layer {i} biases shape")
                    layer.weights, layer.biases = weights, biases
                else:
                    layer = kind()
                layers.append(layer)
            _require(not arrays, f"unexpected arrays {sorted(arrays)}")
            return cls(layers, loss=description["loss"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{refusal}: its contents are inconsistent ({error})") from None


# ----------------------------------------------------------------------------------------------
# The optimizer
# ----------------------------------------------------------------------------------------------

class SGD:
    """Stochastic gradient descent with momentum and weight decay, by PyTorch's rule:

        g = grad + weight_decay * w          (weight decay pulls weights towards 0)
        v = momentum * v + g                 (velocity: a running sum of past gradients)
        w = w - lr * v                       (with momentum 0, simply w = w - lr * g)

    Momentum lets steps build up along directions the gradients agree on and cancel where
    they zig-zag. lr_decay < 1 multiplies lr by lr_decay after every epoch (PyTorch's
    ExponentialLR with gamma = lr_decay): big steps first to learn fast, small steps at the
    end to settle into a minimum instead of bouncing around it.
    """

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0, lr_decay=1.0):
        numbers = (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                   ("lr_decay", lr_decay))
        for name, value in numbers:
            is_number = isinstance(value, (int, float, np.integer, np.floating))
            if isinstance(value, bool) or not is_number or not np.isfinite(value):
                raise ValueError(f"SGD {name} must be a number, got {value!r}")
        if lr <= 0:
            raise ValueError(f"SGD lr (learning rate) must be > 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"SGD momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD weight_decay must be >= 0, got {weight_decay}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"SGD lr_decay must be in (0, 1], got {lr_decay}")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.lr_decay = lr_decay
        self.velocities = None               # one per parameter, made at the first step

    def step(self, pairs):
        """Update each parameter in place from its gradient; pairs: (parameter, gradient)."""
        pairs = list(pairs)
        if self.momentum and (self.velocities is None or [v.shape for v in self.velocities]
                              != [param.shape for param, _ in pairs]):
            self.velocities = [np.zeros_like(param) for param, _ in pairs]
        for i, (param, grad) in enumerate(pairs):
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            if self.momentum:
                velocity = self.velocities[i]
                velocity *= self.momentum    # in place: the velocity lives as long as training
                velocity += grad
                grad = velocity
            param -= self.lr * grad

    def end_epoch(self):
        """Called by fit after every epoch."""
        self.lr *= self.lr_decay

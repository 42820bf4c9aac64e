"""nn: a complete neural-network framework in one readable file of Python and NumPy.

Part I, the chapter, reads top to bottom: the Layer protocol, the layers, the losses, the
network that chains them and the optimizers that make it learn. Every backward pass is derived
in a comment next to its code. Part II, the appendix at the end, holds the engineering the
chapter leans on: checking what users pass in, saving and loading, check_gradients, and speed.

Conventions used everywhere in this file
- Data is batch-first: X has shape (batch, features), one example per row; images are
  (batch, channels, height, width), as in PyTorch.
- Targets Y are rows of the output's shape: one-hot rows (batch, classes) for classifiers,
  which `one_hot(labels, n_classes)` makes.
- layer.forward(x) returns the layer's output and remembers what backward needs;
  layer.backward(grad_output) takes dL/d(output) and returns dL/d(input): the chain rule,
  one layer at a time. Layers with parameters also store dL/d(parameter) for each one.
- Every loss is a mean, and its `_prime` is exactly the gradient of that mean.
- Only an optimizer (SGD, Adam) changes parameters.
- A network computes in the dtype of its parameters, as a PyTorch module does: float32 by
  default (fast), float64 when its layers are built with dtype=np.float64 (for gradient
  checks). Data of another dtype is cast to it once, when fit, evaluate or predict receives it.
"""

import sys
import time

import numpy as np


# ==============================================================================================
# PART I: THE CHAPTER
# ==============================================================================================

# ----------------------------------------------------------------------------------------------
# Layers: the protocol every layer follows
#
# A network is a chain of layers. Each layer turns its input into an output (forward) and,
# given how the loss changes with its output, says how it changes with its input and its
# parameters (backward). Dense, the fully connected layer, is the first example.
# ----------------------------------------------------------------------------------------------

class Layer:
    """One step of the network. Subclass it, give these, and your layer trains, is saved and
    is checked like ours:

    forward(x)      the output for a batch x (batch, ...); keep on self what backward needs.
    backward(g)     g is dL/d(output) for the last forward. Overwrite each gradient array
                    with dL/d(parameter) (grad[...] = ...) and return dL/d(input), of the last
                    input's shape (or None when self.input_gradient_needed is False: the first
                    layer with parameters, whose dL/d(input) nobody uses).
    parameters()    (parameter, gradient) array pairs, both kept as attributes of self
                    (self.weights, self.grad_weights); an optimizer changes each parameter in
                    place. Default [].
    buffers()       arrays learned but not trained, kept as attributes (BatchNorm's running
                    statistics): saved, loaded and cast with the parameters. Default [].
    config()        the keyword arguments that rebuild the layer, for saving. Default {}.

    The network sets self.training before each forward: True in fit, False in predict and
    evaluate (Dropout and BatchNorm care).
    """

    training = False
    input_gradient_needed = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def parameters(self):
        return []

    def buffers(self):
        return []

    def config(self):
        return {}

    def __getattr__(self, name):             # only for an attribute that is not there
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (if forward sets "
                             f"it, call forward before backward)", name=name, obj=self)

    def __repr__(self):
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.config().items())
        return f"{type(self).__name__}({arguments})"


class Dense(Layer):
    """A fully connected layer: output = input @ weights + biases.

    Shapes: input (batch, n_in), weights (n_in, n_out), biases (n_out,), output (batch, n_out).

    init="he" (the default) suits ReLU: weights ~ Normal(0, 2 / n_in). ReLU zeroes about half of
    its inputs, so doubling the plain 1 / n_in variance keeps the size of the signal the same from
    layer to layer, and a deep ReLU net starts neither vanishing nor exploding.
    init="glorot" suits sigmoid and tanh (and the layer before softmax): Normal(0, 2 / (n_in +
    n_out)) balances the signal going forward and the gradient coming back.
    """

    def __init__(self, n_in, n_out, seed=None, init="he", dtype=np.float32):
        _check_dense_arguments(n_in, n_out, seed, init, dtype)
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

    def backward(self, grad_output):
        # output[b, j] = sum_i input[b, i] * weights[i, j] + biases[j], so by the chain rule:
        #   dL/dweights[i, j] = sum_b input[b, i] * grad_output[b, j]  ->  input.T @ grad_output
        #   dL/dbiases[j]     = sum_b grad_output[b, j]                 ->  summed over rows
        #   dL/dinput[b, i]   = sum_j grad_output[b, j] * weights[i, j] ->  grad_output @ weights.T
        # Each parameter is used by every example, so its gradient sums over the batch.
        np.matmul(self.input.T, grad_output, out=self.grad_weights)  # write in place: no new array
        grad_output.sum(axis=0, out=self.grad_biases)
        if not self.input_gradient_needed:   # the first layer's input is the data: skipping its
            return None                      # gradient saves a third of the matrix products
        return grad_output @ self.weights.T  # (batch, n_out) @ (n_out, n_in) -> (batch, n_in)

    def parameters(self):
        return [(self.weights, self.grad_weights), (self.biases, self.grad_biases)]

    def config(self):
        return {"n_in": self.n_in, "n_out": self.n_out}

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"


# ----------------------------------------------------------------------------------------------
# Activations: the non-linearities between the Dense layers
#
# A chain of Dense layers alone is one linear function, however long. An activation between
# them bends the signal, so the network can learn curved boundaries; its backward multiplies
# the incoming gradient by the function's derivative.
# ----------------------------------------------------------------------------------------------

class Activation(Layer):
    """A layer without weights that applies a fixed function: output = f(input), same shape.

    Most activations work on each number on its own: output[b, i] depends only on input[b, i],
    so the chain rule has a single term,
        dL/dinput = dL/doutput * f'(input)        (element by element),
    and subclasses just give f (`function`) and f' (`derivative`). Softmax mixes the numbers of
    a row, so it brings its own backward. Every derivative here can be written with the output
    alone, so the output is all that forward remembers.
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


class Tanh(Activation):
    """tanh(x) = (e^x - e^-x) / (e^x + e^-x), squashing any number into (-1, 1).

    A sigmoid stretched to (-1, 1) (tanh(x) = 2 sigmoid(2x) - 1), centred on 0, so the next
    layer's inputs average near 0. tanh'(x) = 1 - tanh(x)^2: again the output is enough.
    np.tanh is exact at the extremes (tanh(1e4) = 1), with no overflow.
    """

    def function(self, x):
        return np.tanh(x)

    def derivative(self):
        return 1 - self.output ** 2


class LeakyReLU(Activation):
    """LeakyReLU(x) = x for x > 0, slope * x otherwise (slope 0.01 by default).

    A ReLU unit whose input is negative for every example has slope 0 there and never learns
    again ("dies"); the small slope keeps a gradient flowing. For 0 <= slope < 1, the output
    is > 0 exactly where x > 0, so the slope (1 or `slope`) can be read off the output.
    """

    def __init__(self, slope=0.01):
        self.slope = _check_number(slope, "LeakyReLU slope", "in [0, 1)", lambda s: 0 <= s < 1)

    def function(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.slope))

    def derivative(self):
        dtype = self.output.dtype.type
        return np.where(self.output > 0, dtype(1), dtype(self.slope))

    def config(self):
        return {"slope": self.slope}


class Softmax(Activation):
    """softmax(z)[b, j] = exp(z[b, j]) / sum_k exp(z[b, k]): each row becomes probabilities.

    Unlike the activations above, every output of a row depends on every input of the row, so
    its backward is a Jacobian-vector product rather than an element-wise product.
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
# Dropout: a layer that behaves differently while training
#
# A regulariser: by switching random units off while training, it keeps the network from
# memorising the training set. It shows why layers know whether they are training.
# ----------------------------------------------------------------------------------------------

class Dropout(Layer):
    """While training, zero each input with probability `rate` and scale the rest by
    1 / (1 - rate); at inference (predict, evaluate) pass the input through unchanged.

    A unit that may vanish at any step cannot lean on a few others: the network learns
    redundant features and overfits less. Scaling the kept units ("inverted" dropout) keeps
    every unit's expected value the same as without dropout, so inference needs no change.
    Its own random generator makes the masks reproducible: from `seed`, or from fit's seed.
    """

    def __init__(self, rate, seed=None):
        self.rate = _check_number(rate, "Dropout rate", "in [0, 1)", lambda r: 0 <= r < 1)
        _check_seed(seed, "Dropout seed")
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        """fit(seed=...) calls this, so a seeded fit draws the same masks every time."""
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.rate == 0:
            self.mask = None
            return x
        keep = 1 - self.rate
        # mask is 1 / keep where a unit is kept and 0 where it is dropped, in x's dtype.
        self.mask = (self.rng.random(x.shape, dtype=x.dtype) < keep) * x.dtype.type(1 / keep)
        return x * self.mask

    def backward(self, grad_output):
        # output = input * mask, with the mask a constant: dL/dinput = grad_output * mask.
        return grad_output if self.mask is None else grad_output * self.mask

    def config(self):
        return {"rate": self.rate}


# ----------------------------------------------------------------------------------------------
# Convolutional layers: for images
#
# A Dense layer on 784 pixels learns a separate weight for every pixel; a convolution learns a
# few small kernels and slides them over the image, so a stroke is recognised wherever it is.
# Reshape turns MNIST's rows into images, Flatten turns feature maps back into rows.
# ----------------------------------------------------------------------------------------------

def im2col(x, k, stride, padding):
    """Every k x k window of the zero-padded images x (batch, channels, height, width) as one
    column of a matrix (channels * k * k, positions). A column lists its window's numbers in
    the order (channel c, kernel row i, kernel column j), the weights' own order; the columns
    run over the positions (y, x) of every example, in the order (y, x, example).

    For a fixed (i, j), entry (i, j) of every window is one strided slice of the padded images,
    so k * k slice copies fill the matrix: no loop over examples or positions.
    """
    batch, channels, height, width = x.shape
    out_h, out_w = _conv_output_shape(height, width, k, stride, padding)
    padded = _zero_padded(x, padding)                # (channels, h + 2p, w + 2p, batch)
    columns = np.empty((channels, k, k, out_h, out_w, batch), x.dtype)
    for i in range(k):
        for j in range(k):
            columns[:, i, j] = padded[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
    return columns.reshape(channels * k * k, out_h * out_w * batch)


def col2im(columns, input_shape, k, stride, padding):
    """im2col run backwards: add each window's column back where the window was taken from.
    Windows overlap, so a pixel collects the sum of its entries in every window it lies in;
    the padding's share is dropped. Returns (batch, channels, height, width) = input_shape."""
    batch, channels, height, width = input_shape
    out_h, out_w = _conv_output_shape(height, width, k, stride, padding)
    columns = columns.reshape(channels, k, k, out_h, out_w, batch)
    p = padding
    padded = np.zeros((channels, height + 2 * p, width + 2 * p, batch), columns.dtype)
    for i in range(k):
        for j in range(k):
            padded[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride] += columns[:, i, j]
    return padded[:, p:p + height, p:p + width].transpose(3, 0, 1, 2)


class Conv2D(Layer):
    """A convolution: each of out_channels small kernels slides over the image and, at every
    position, sums kernel * window + bias. The same few weights look for one pattern (an edge,
    a stroke) everywhere in the image, so a few hundred weights do the work of a huge Dense layer.

    Shapes (PyTorch's): input (batch, in_channels, height, width), weights (out_channels,
    in_channels, k, k), biases (out_channels,), output (batch, out_channels, out_h, out_w) with
    out_h = (height + 2 * padding - k) // stride + 1, and the same for the width.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, seed=None,
                 dtype=np.float32):
        _check_conv_arguments(in_channels, out_channels, kernel_size, stride, padding, seed,
                              dtype)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        # He initialisation (see Dense): each output sums in_channels * k * k inputs.
        fan_in = in_channels * kernel_size * kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        rng = np.random.default_rng(seed)
        self.weights = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        self.biases = np.zeros(out_channels, dtype=dtype)
        self.grad_weights = np.zeros_like(self.weights)
        self.grad_biases = np.zeros_like(self.biases)

    def forward(self, x):
        # The definition (a cross-correlation; "convolution" in deep learning):
        #   output[n, o, y, x] = biases[o] + sum over c, i, j of
        #                        weights[o, c, i, j] * padded[n, c, y * s + i, x * s + j]
        # im2col makes each window a column in the (c, i, j) order, and row o of `kernels` is
        # kernel o in that order, so the whole layer is ONE matrix product.
        k, s, p = self.kernel_size, self.stride, self.padding
        batch, _, height, width = self._check_input(x)
        self.input_shape = x.shape
        self.columns = im2col(x, k, s, p)                      # (C * k * k, positions)
        kernels = self.weights.reshape(self.out_channels, -1)  # (out_channels, C * k * k)
        output = kernels @ self.columns                        # (out_channels, positions)
        output += self.biases[:, None]
        # The positions run over (y, x, example): hand on the (batch, out_channels, y, x) view.
        out_h, out_w = _conv_output_shape(height, width, k, s, p)
        return output.reshape(self.out_channels, out_h, out_w, batch).transpose(3, 0, 1, 2)

    def backward(self, grad_output):
        # Forward computed  output = kernels @ columns + biases  (a column per position), so
        # its backward is Dense's with rows and columns swapped. In the code's names:
        #   grad_weights = grad @ columns.T   (as kernels: one row per kernel) the correlation
        #                                     of the input with the output gradient, summed
        #                                     over the batch and positions;
        #   grad_biases  = grad summed over the batch and positions;
        #   grad_columns = kernels.T @ grad   and col2im adds each window's column back where
        #                                     the window came from: dL/d(input).
        k, s, p = self.kernel_size, self.stride, self.padding
        grad = grad_output.transpose(1, 2, 3, 0).reshape(self.out_channels, -1)  # as output
        kernels = self.weights.reshape(self.out_channels, -1)
        np.matmul(grad, self.columns.T, out=self.grad_weights.reshape(self.out_channels, -1))
        grad.sum(axis=1, out=self.grad_biases)
        if not self.input_gradient_needed:  # the network's first layer with weights: nobody
            return None                      # uses dL/d(its input) (see Layer)
        return col2im(kernels.T @ grad, self.input_shape, k, s, p)

    def _check_input(self, x):
        c, k, p = self.in_channels, self.kernel_size, self.padding
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"{self!r} expects input of shape (batch, {c}, height, width), "
                             f"got shape {x.shape}")
        height, width = x.shape[2] + 2 * p, x.shape[3] + 2 * p
        if min(height, width) < k:
            raise ValueError(f"{self!r}: its {k}x{k} kernel is larger than the input padded by "
                             f"{p} ({height}x{width}): input shape {x.shape}")
        return x.shape

    def parameters(self):
        return [(self.weights, self.grad_weights), (self.biases, self.grad_biases)]

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def __repr__(self):
        options = "".join(f", {name}={value}" for name, value, default
                          in (("stride", self.stride, 1), ("padding", self.padding, 0))
                          if value != default)
        return f"Conv2D({self.in_channels}, {self.out_channels}, {self.kernel_size}{options})"


class MaxPool2D(Layer):
    """Max pooling: keep the largest number of each size x size window (the windows do not
    overlap), so size 2 halves the height and the width. The image shrinks, and a feature found
    anywhere in a window counts the same, so small shifts of the input barely matter.

    Shapes: input (batch, channels, height, width) with height and width multiples of size,
    output (batch, channels, height / size, width / size).
    """

    def __init__(self, size=2):
        _check_whole(size, "MaxPool2D size", maximum=MAX_WINDOW)
        self.size = int(size)

    def forward(self, x):
        n = self.size
        if x.ndim != 4 or x.shape[2] % n or x.shape[3] % n or min(x.shape[2:]) < n:
            raise ValueError(f"{self!r} expects input of shape (batch, channels, height, width) "
                             f"with height and width multiples of {n}, got shape {x.shape}")
        # x[:, :, i::n, j::n] holds entry (i, j) of every window, so the pooled image is the
        # element-wise maximum of these n * n views, taken one view at a time.
        output = x[:, :, 0::n, 0::n].copy(order="K")        # order="K": keep the memory order
        entries = [(i, j) for i in range(n) for j in range(n)]   # a window's, row-major order
        for i, j in entries[1:]:
            np.maximum(output, x[:, :, i::n, j::n], out=output)
        self.input, self.output = x, output
        return output

    def backward(self, grad_output):
        # output = the largest entry of its window, so d output / d entry is 1 for that entry
        # and 0 for the others: each window's gradient goes to its maximum, the rest get 0.
        # Ties (equal pixels, or a window of ReLU zeros): the FIRST maximum in row-major order
        # takes it all, as in PyTorch, so each window hands on its gradient exactly once.
        n, x, output = self.size, self.input, self.output
        grad_output = _in_memory_order_of(output, grad_output)
        grad_input = np.empty_like(x)                  # each entry is written once below
        waiting = np.ones_like(output, dtype=bool)     # windows whose maximum is not found yet
        for i in range(n):                             # the window's entries, row-major
            for j in range(n):
                first_max = x[:, :, i::n, j::n] == output     # entry (i, j) is a maximum,
                first_max &= waiting                          # and no entry before it was
                np.multiply(grad_output, first_max, out=grad_input[:, :, i::n, j::n])
                waiting &= ~first_max
        return grad_input

    def config(self):
        return {"size": self.size}

    def __repr__(self):
        return "MaxPool2D()" if self.size == 2 else f"MaxPool2D({self.size})"


class Flatten(Layer):
    """Images to rows, so that Dense layers can follow convolutions: (batch, c, h, w) becomes
    (batch, c * h * w) in PyTorch's order (channel by channel, each image row by row)."""

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"Flatten() expects input of shape (batch, ...), got shape {x.shape}")
        self.input_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad_output):
        return grad_output.reshape(self.input_shape)   # the same numbers, back in their places


class Reshape(Layer):
    """Rows to images (or any shape): Reshape((1, 28, 28)) turns MNIST's rows of 784 pixels into
    one-channel 28 x 28 images, so a CNN takes the same X as any network.
    Shapes: input (batch, ...), output (batch, *shape), the same numbers."""

    def __init__(self, shape):
        _check_reshape(shape)
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x):
        size = int(np.prod(self.shape))
        if x.ndim < 1 or int(np.prod(x.shape[1:])) != size:
            raise ValueError(f"{self!r} expects input of shape (batch, ...) with {size} numbers "
                             f"per example, got shape {x.shape}")
        self.input_shape = x.shape
        return x.reshape((len(x),) + self.shape)

    def backward(self, grad_output):
        return grad_output.reshape(self.input_shape)

    def config(self):
        return {"shape": list(self.shape)}

    def __repr__(self):
        return f"Reshape({self.shape})"


# ----------------------------------------------------------------------------------------------
# Normalisation: keep each feature's numbers centred and of unit size while the weights move
#
# As the early layers learn, the numbers they hand on drift in size, and every later layer must
# keep chasing them. BatchNorm re-centres and re-scales each feature (each channel of an image)
# over the batch, then lets the network choose the scale and shift it really wants (gamma,
# beta). Training tolerates larger learning rates and depends less on the initialisation.
# ----------------------------------------------------------------------------------------------

class BatchNorm(Layer):
    """Batch normalisation (PyTorch's BatchNorm1d and BatchNorm2d in one layer).

    Shapes: input and output (batch, n) after a Dense layer, or (batch, n, height, width) after
    a Conv2D, where each channel is normalised over the batch, height and width; gamma and beta
    (n,); running_mean and running_var (n,).

    Training:   x_hat = (x - mean) / sqrt(var + eps)   with the batch's mean and (biased)
                output = gamma * x_hat + beta          variance, feature by feature;
                running_mean += momentum * (mean - running_mean), and the same for running_var
                with the unbiased variance (var * m / (m - 1), m numbers per feature).
    Inference:  the same with running_mean and running_var in place of the batch's, so that
                an example's output does not depend on the others in its batch.
    gamma starts at 1 and beta at 0 (parameters(): gamma, then beta); the running statistics
    start at 0 and 1 and are buffers(): learned from the data, not by gradient descent.
    """

    def __init__(self, n, momentum=0.1, eps=1e-5, dtype=np.float32):
        _check_batchnorm_arguments(n, momentum, eps, dtype)
        self.n, self.momentum, self.eps = int(n), float(momentum), float(eps)
        self.gamma = np.ones(self.n, dtype=dtype)
        self.beta = np.zeros(self.n, dtype=dtype)
        self.grad_gamma = np.zeros_like(self.gamma)
        self.grad_beta = np.zeros_like(self.beta)
        self.running_mean = np.zeros(self.n, dtype=dtype)
        self.running_var = np.ones(self.n, dtype=dtype)

    def forward(self, x):
        if x.ndim not in (2, 4) or x.shape[1] != self.n:
            raise ValueError(f"{self!r} expects input of shape (batch, {self.n}) or (batch, "
                             f"{self.n}, height, width), got shape {x.shape}")
        # Statistics per feature: over the batch, and over height and width for images.
        self.axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, self.n) + (1,) * (x.ndim - 2)           # broadcasts along self.axes
        if self.training:
            m = x.size // self.n                            # numbers per feature
            if m < 2:
                raise ValueError(f"{self!r} in training needs more than one number per "
                                 f"feature to take a variance of, got input of shape {x.shape} "
                                 f"(in fit, a last batch of one example, or a part of one in "
                                 f"a process of fit(workers=N): choose another batch_size)")
            mean = x.mean(axis=self.axes, keepdims=True)
            centred = x - mean
            var = np.square(centred).mean(axis=self.axes, keepdims=True)
            self.running_mean += self.momentum * (mean.ravel() - self.running_mean)
            self.running_var += self.momentum * (var.ravel() * m / (m - 1) - self.running_var)
        else:
            centred = x - self.running_mean.reshape(shape)
            var = self.running_var.reshape(shape)
        self.inv_std = 1 / np.sqrt(var + x.dtype.type(self.eps))      # (1, n, ...)
        self.x_hat = centred * self.inv_std
        return self.x_hat * self.gamma.reshape(shape) + self.beta.reshape(shape)

    def backward(self, grad_output):
        # output = gamma * x_hat + beta, so, with the sums over self.axes (a feature's m numbers):
        #   grad_beta  = sum(grad_output)              grad_gamma = sum(grad_output * x_hat)
        # In inference the statistics are constants: dL/dx = grad_output * gamma * inv_std.
        # In training the mean and the variance depend on x too. x_hat = (x - mean) * inv_std
        # with d mean / dx_i = 1 / m and d var / dx_i = 2 (x_i - mean) / m, which gives
        #   d x_hat_j / d x_i = inv_std * ([i = j] - 1 / m - x_hat_i * x_hat_j / m),
        # and summing grad_output_j * gamma times that over j:
        #   dL/dx = gamma * inv_std * (grad_output - grad_beta / m - x_hat * grad_gamma / m):
        # the gradient, less its mean and less its part along x_hat, the two directions in
        # which normalising leaves x_hat unchanged.
        shape = self.inv_std.shape
        np.sum(grad_output, axis=self.axes, out=self.grad_beta)
        np.sum(grad_output * self.x_hat, axis=self.axes, out=self.grad_gamma)
        if not self.input_gradient_needed:     # the network's first layer with parameters
            return None
        scale = self.gamma.reshape(shape) * self.inv_std
        if not self.training:
            return grad_output * scale
        m = grad_output.size // self.n
        grad_input = grad_output - self.grad_beta.reshape(shape) / m
        grad_input -= self.x_hat * (self.grad_gamma.reshape(shape) / m)
        grad_input *= scale
        return grad_input

    def parameters(self):
        return [(self.gamma, self.grad_gamma), (self.beta, self.grad_beta)]

    def buffers(self):
        return [self.running_mean, self.running_var]

    def config(self):
        return {"n": self.n, "momentum": self.momentum, "eps": self.eps}

    def __repr__(self):
        options = "".join(f", {name}={value}" for name, value, default
                          in (("momentum", self.momentum, 0.1), ("eps", self.eps, 1e-5))
                          if value != default)
        return f"BatchNorm({self.n}{options})"


# ----------------------------------------------------------------------------------------------
# Data augmentation: more training images from the ones we have
#
# A digit moved by a pixel or two is still the same digit. Showing the network each training
# image at a new random offset every epoch teaches it that, and it overfits less. The shifts
# happen only while training: predict and evaluate see the images as they are.
# ----------------------------------------------------------------------------------------------

def shift(x, shifts, pixels):
    """Each image x[n] (its last two axes) moved down by shifts[n, 0] and right by shifts[n, 1]
    pixels (negative: up, left), each at most `pixels`, with zeros where nothing moved in."""
    p, (height, width) = pixels, x.shape[-2:]
    padded = np.zeros(x.shape[:-2] + (height + 2 * p, width + 2 * p), x.dtype)
    padded[..., p:p + height, p:p + width] = x
    # Each height x width window of the padded image is the image moved by some (down, right).
    # As a view (no copy), windows[n, i, j] is image n moved down by p - i and right by p - j:
    # one gather picks each image's own. (Measured 3x faster than a slice copy per image.)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(-2, -1))
    windows = np.moveaxis(windows, (-4, -3), (1, 2))
    return windows[np.arange(len(x)), p - shifts[:, 0], p - shifts[:, 1]]


class RandomShift(Layer):
    """While training, move each image by a random whole number of pixels, from -pixels to
    +pixels, up or down and left or right (each example its own shift, the same for all its
    channels), filling the uncovered border with zeros; at inference pass the input through.

    Shapes: input and output (batch, ..., height, width), e.g. (batch, channels, height,
    width) after Reshape((1, 28, 28)). Only the inputs move, so the labels stay right. Its own
    random generator makes the shifts reproducible: from `seed`, or from fit's seed.
    """

    def __init__(self, pixels=2, seed=None):
        _check_whole(pixels, "RandomShift pixels", 0, maximum=MAX_WINDOW)
        _check_seed(seed, "RandomShift seed")
        self.pixels = int(pixels)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        """fit(seed=...) calls this, so a seeded fit draws the same shifts every time."""
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if x.ndim < 3:
            raise ValueError(f"{self!r} expects images, of shape (batch, ..., height, width), "
                             f"got shape {x.shape}")
        if not self.training or self.pixels == 0:
            self.shifts = None
            return x
        # shifts[n] = (down, right) for image n: output[n, ..., y, x] = x[n, ..., y - down,
        # x - right], and 0 where that falls outside the image.
        self.shifts = self.rng.integers(-self.pixels, self.pixels + 1, size=(len(x), 2))
        return shift(x, self.shifts, self.pixels)

    def backward(self, grad_output):
        # Each output number is one input number moved (or a 0), so the gradient moves back:
        # dL/dx[n, ..., y, x] = grad_output[n, ..., y + down, x + right], the opposite shift.
        if self.shifts is None:
            return grad_output
        return shift(grad_output, -self.shifts, self.pixels)

    def config(self):
        return {"pixels": self.pixels}


# ----------------------------------------------------------------------------------------------
# Losses: a number that says how wrong the predictions are, and its gradient
#
# Training lowers the loss, so each loss comes with its gradient (its `_prime`), where
# backpropagation starts. A cross-entropy and its final activation also have a fused gradient,
# simpler and more exact than the two chained. Shapes, everywhere below: y_true and y_pred
# are (batch, outputs), and every gradient has y_pred's shape.
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


def softmax_crossentropy_prime(y_true, p):
    """dL/dz at the input z of a final Softmax, for L = categorical_crossentropy(y_true, p).

    The loss gives g = dL/dp = -y / (p N), and Softmax.backward would return
    p * (g - sum(g * p)). Here p * g = -y / N and, as each row of y sums to 1,
    sum(g * p) = -1 / N. So the chain rule through both simplifies to
        dL/dz = (p - y) / N.
    Computed in this form it stays exact even when the network is confidently wrong: the
    general route divides y by p ~ 0 (overflowing, or clipped and wrong) and then multiplies
    by p again. It is also one cheap subtraction instead of several passes.
    """
    return (p - y_true) / len(p)


def binary_crossentropy(y_true, y_pred):
    """Mean over every element of -[y log p + (1 - y) log(1 - p)], for probabilities p:
    the cross-entropy of yes/no answers, each output a probability of "yes"."""
    return float(-np.mean(y_true * np.log(_no_zeros(y_pred))
                          + (1 - y_true) * np.log(_no_zeros(1 - y_pred))))


def binary_crossentropy_prime(y_true, y_pred):
    """d bce / d p = -(y / p - (1 - y) / (1 - p)) / n = (p - y) / (p (1 - p) n)."""
    return (y_pred - y_true) / (_no_zeros(y_pred * (1 - y_pred)) * y_pred.size)


def sigmoid_binary_crossentropy_prime(y_true, p):
    """dL/dz at the input z of a final Sigmoid, for L = binary_crossentropy(y_true, p).

    The loss gives dL/dp = (p - y) / (p (1 - p) n), and Sigmoid.backward multiplies by
    sigmoid'(z) = p (1 - p). The two p (1 - p) cancel:
        dL/dz = (p - y) / n,
    exact even where p rounds to 0 or 1 (where the general route would divide by 0).
    """
    return (p - y_true) / p.size


# Each loss by name: (loss, its gradient, the final activation it needs or None, and the
# fused gradient at that activation's input, which Network.backward uses instead).
LOSSES = {
    "categorical_crossentropy": (categorical_crossentropy, categorical_crossentropy_prime,
                                 Softmax, softmax_crossentropy_prime),
    "binary_crossentropy": (binary_crossentropy, binary_crossentropy_prime,
                            Sigmoid, sigmoid_binary_crossentropy_prime),
    "mse": (mse, mse_prime, None, None),
}


def accuracy_kind(Y):
    """How accuracy is counted for targets Y (batch, outputs): "classes" for one-hot rows,
    "yes/no" for a single column of 0s and 1s, "none" for anything else (a regression)."""
    zeros_and_ones = np.all((Y == 0) | (Y == 1))
    if Y.shape[1] > 1 and zeros_and_ones and np.all(Y.sum(axis=1) == 1):
        return "classes"
    return "yes/no" if Y.shape[1] == 1 and zeros_and_ones else "none"


def one_hot(labels, n_classes, dtype=np.float32):
    """Integer labels (n,) -> one-hot rows (n, n_classes): row i has a 1 in column labels[i].

    The default float32 matches the training data; a float64 one-hot would silently make
    every float32 gradient float64 and training twice as slow.
    """
    labels = _checked_labels(labels, n_classes)
    encoded = np.zeros((labels.size, n_classes), dtype=dtype)
    encoded[np.arange(labels.size), labels] = 1
    return encoded


# ----------------------------------------------------------------------------------------------
# The network: layers in a chain, trained by backpropagation
#
# Network runs the layers forward, the loss's gradient back through them (backpropagation),
# and fit repeats that over batches of examples, letting an optimizer change the parameters
# after each batch: mini-batch gradient descent.
# ----------------------------------------------------------------------------------------------

class Network:
    """A stack of layers trained with a loss: Keras-like fit, evaluate, predict, save, load."""

    def __init__(self, layers, loss="categorical_crossentropy"):
        self.layers = _checked_layers(layers, loss)
        self.input_shape = None              # the shape of one example, once seen: save records it
        self.loss_name = loss
        self.loss, self.loss_prime, activation, fused_prime = LOSSES[loss]
        # The fused gradient stands for exactly nn's activation's backward; any other last layer
        # (your own softmax, or a subclass with its own backward) gets loss_prime chained through.
        self.fused_prime = fused_prime if type(self.layers[-1]) is activation else None
        self.accuracy_kind = None            # fit decides it once from its targets
        # Backward can stop at the first layer with parameters: no gradient before it is used.
        self.first_trained = next((i for i, layer in enumerate(self.layers)
                                   if layer.parameters()), len(self.layers))
        for i, layer in enumerate(self.layers):
            layer.input_gradient_needed = i > self.first_trained

    def __repr__(self):
        return f"Network({self.layers!r}, loss={self.loss_name!r})"

    def parameters(self):
        """Every layer's (parameter, gradient) pairs, for the optimizer."""
        return [pair for layer in self.layers for pair in layer.parameters()]

    def count_params(self):
        return sum(param.size for param, _ in self.parameters())

    @property
    def dtype(self):
        """The dtype the network computes in: that of its parameters, float32 unless its layers
        were built with dtype=np.float64. fit, evaluate and predict cast data of any other
        dtype (float64, integers) to it once, up front. Layers that disagree (e.g. a layer of
        your own that made float64 weights beside Dense's float32) are cast to the first
        parameter's dtype when fit, evaluate or predict starts. No parameters: float32."""
        pairs = self.parameters()
        return pairs[0][0].dtype if pairs else np.dtype(np.float32)

    def astype(self, dtype):
        """Cast every parameter, gradient and buffer to dtype (np.float32 or np.float64), in
        the attributes where the layers keep them; returns the network."""
        _check_float_dtype(dtype, "Network.astype dtype")
        _cast_parameters(self.layers, dtype)
        return self

    # -- the learning core: forward, backward, one step ------------------------------------------

    def forward(self, X, training=False):
        """Run a batch X through every layer, in order; returns the network's output."""
        self.input_shape = X.shape[1:]       # one example's shape: save records it
        self.input_shapes = []               # backward checks each dL/d(input) against these
        with np.errstate(under="ignore"):    # numbers below ~1e-38 rounding to 0 is harmless
            for i, layer in enumerate(self.layers):
                layer.training = training    # only layers like Dropout and BatchNorm care
                self.input_shapes.append(X.shape)
                X = layer.forward(X)
                _check_returned(i, layer, "forward", "its output", X)
        return X

    def backward(self, Y, P):
        """Fill every layer's gradients for targets Y and the outputs P of the last forward.

        The loss gradient dL/dP enters the last layer, and each layer's backward hands
        dL/d(its input) to the layer before it: the chain rule, from the loss back to the data.
        """
        layers = self.layers
        if self.fused_prime is not None:     # a cross-entropy and nn's own final activation
            grad = self.fused_prime(Y, P)    # see softmax_crossentropy_prime: exact and cheap
            layers = layers[:-1]             # the gradient is already at that activation's input
        else:
            grad = self.loss_prime(Y, P)
        with np.errstate(under="ignore"):
            for i in reversed(range(self.first_trained, len(layers))):
                grad = layers[i].backward(grad)
                if layers[i].input_gradient_needed:      # the layer before i will use it
                    _check_returned(i, layers[i], "backward", "dL/d(its input)", grad,
                                    self.input_shapes[i])

    def compute_gradients(self, X, Y):
        """Forward and backward on one batch: fills every layer's gradients for it.
        Returns (loss, accuracy) on the batch (accuracy may be None). After a loss that is
        not finite (the weights diverged) there is no backward: fit and train_on_batch stop."""
        P = self.forward(X, training=True)
        loss = self.loss(Y, P)
        if np.isfinite(loss):
            self.backward(Y, P)
        return loss, self.accuracy(Y, P, self.accuracy_kind)

    def train_on_batch(self, X, Y, optimizer):
        """One step of gradient descent on one batch: forward, loss, backward, update; returns
        (loss, accuracy) on the batch before the step (accuracy may be None). X, Y and the
        optimizer are checked as fit checks them (fit checks its data once, not every batch)."""
        _check_optimizer(optimizer)
        X, Y = _checked_batch(self, X, Y)
        loss, accuracy = self.compute_gradients(X, Y)
        if not np.isfinite(loss):            # no step along a gradient that is not finite
            raise _divergence(f"the training loss became {loss}", optimizer)
        optimizer.step(self.parameters())
        return loss, accuracy

    def accuracy(self, Y, P, kind=None):
        """The fraction of examples answered right, where that means something, else None.
        The targets tell which (kind, as accuracy_kind(Y) says; fit decides it once from all
        its targets): for one-hot rows an output is right when its largest value is in the
        target's column; for a single 0/1 column when it is on the target's side of 0.5.
        Other targets (a regression) have no accuracy."""
        kind = kind or accuracy_kind(Y)
        if kind == "classes":
            return float(np.count_nonzero(P.argmax(axis=1) == Y.argmax(axis=1)) / len(P))
        if kind == "yes/no":
            return float(np.count_nonzero((P > 0.5) == (Y > 0.5)) / len(P))
        return None

    # -- Keras-like training and use ---------------------------------------------------------------

    def fit(self, X, Y, epochs=1, batch_size=32, optimizer=None, validation_data=None,
            seed=None, verbose=1, patience=None, restore_best=True, workers=1, callbacks=None):
        """Train with mini-batch gradient descent; returns the per-epoch history dict.

        Every epoch visits the examples in a new (seeded) random order, in batches of
        batch_size (the last one may be smaller). The reported loss and accuracy are those of
        the batches as they were trained, as Keras reports them.

        Early stopping (patience=N, needs validation_data): stop once the validation loss has
        not improved for N epochs in a row, and (restore_best) go back to the weights of the
        best epoch. history["best_epoch"] and history["stopped_epoch"] (None if it ran to the
        end) say what happened.

        workers=N (on Linux, N up to max_workers(), the cores) shares each batch out between N
        processes, for speed: the same gradient up to rounding. nn_parallel.py, beside nn.py,
        does it; its docstring says what it asks of a layer of your own.

        callbacks: objects with any of Keras's methods, which fit calls: on_train_begin(),
        on_epoch_begin(epoch), on_train_batch_begin(batch), on_train_batch_end(batch, logs) with
        the batch's "loss", "accuracy" and "size", on_epoch_end(epoch, logs) with the epoch's
        values in history, on_train_end() however fit ends; e.g. nn_parallel.AdaptiveBlasThreads().
        """
        X, Y, validation_data, optimizer, callbacks = _prepared_fit(
            self, X, Y, epochs, batch_size, optimizer, validation_data, seed, patience, workers,
            callbacks)                       # checked; the data in the network's dtype
        rng, history, best_loss, best_state = np.random.default_rng(seed), {}, np.inf, None
        # While an epoch runs, a counter redrawn by "\r": on a terminal or in a notebook only.
        live = verbose and ("ipykernel" in type(sys.stdout).__module__ or sys.stdout.isatty())
        with _helper_processes(self, X, Y, workers, seed) as helpers, \
                _training(callbacks) as tell, np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(1, epochs + 1):
                tell("on_epoch_begin", epoch)
                started, done, loss_sum, right = time.perf_counter(), 0, 0.0, 0.0
                next_draw = started + PROGRESS_SECONDS
                order = rng.permutation(len(X))      # a new random order every epoch
                for batch, first in enumerate(range(0, len(X), batch_size)):
                    tell("on_train_batch_begin", batch)
                    rows = order[first:first + batch_size]
                    if helpers:                      # workers > 1: the same gradient, shared out
                        loss, accuracy = helpers.compute_gradients(rows)
                    else:
                        loss, accuracy = self.compute_gradients(X.take(rows, axis=0),
                                                                Y.take(rows, axis=0))
                    if not np.isfinite(loss):        # no step along a gradient not finite
                        raise _divergence(f"in epoch {epoch}, the training loss of batch "
                                          f"{batch + 1} became {loss}", optimizer)
                    optimizer.step(self.parameters())
                    loss_sum += loss * len(rows)
                    right += (accuracy or 0) * len(rows)     # None (no accuracy) counts 0
                    done += len(rows)
                    tell("on_train_batch_end", batch,
                         {"loss": loss, "accuracy": accuracy, "size": len(rows)})
                    if live and batch and time.perf_counter() >= next_draw:
                        print(f"\rEpoch {epoch}/{epochs} - {done}/{len(X)}", end="", flush=True)
                        next_draw = time.perf_counter() + PROGRESS_SECONDS
                optimizer.end_epoch()
                if not all(np.isfinite(param).all() for param, _ in self.parameters()):
                    raise _divergence(f"in epoch {epoch}, a weight became NaN or infinite",
                                      optimizer)
                logs = {"loss": loss_sum / done, "accuracy": right / done}
                if validation_data is not None:
                    logs["val_loss"], logs["val_accuracy"] = self.evaluate(*validation_data)
                    if not np.isfinite(logs["val_loss"]):
                        raise _divergence(f"in epoch {epoch}, the validation loss became "
                                          f"{logs['val_loss']}", optimizer)
                if self.accuracy_kind == "none":         # a regression: no accuracy
                    logs = {key: value for key, value in logs.items() if "accuracy" not in key}
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                if verbose:                          # one Keras-like line per epoch
                    print(("\r" if live else "") + f"Epoch {epoch}/{epochs} - "
                          f"{time.perf_counter() - started:.1f}s" + "".join(
                              f" - {key}: {value:.4f}" for key, value in logs.items()))
                if verbose and epoch == 1 and self.accuracy_kind == "classes":
                    _say_if_at_chance(X, Y, logs["accuracy"], optimizer)
                tell("on_epoch_end", epoch, logs)
                if patience is not None:             # early stopping, on the validation loss
                    if logs["val_loss"] < best_loss:
                        best_loss, history["best_epoch"] = logs["val_loss"], epoch
                        history.setdefault("stopped_epoch", None)
                        best_state = [array.copy() for array in _state(self.layers)]
                    elif epoch - history["best_epoch"] >= patience:
                        history["stopped_epoch"] = epoch
                        break
        if restore_best and best_state is not None:
            for array, best in zip(_state(self.layers), best_state):
                array[...] = best
        if verbose and patience is not None and history["stopped_epoch"]:
            print(f"Early stopping after epoch {epoch}: val_loss has not improved for {patience} "
                  f"epochs; kept the weights of epoch " + (
                      f"{history['best_epoch']}, the best val_loss" if restore_best
                      else f"{epoch}, the last (restore_best=False)"))
        elif verbose and restore_best and history.get("best_epoch", epoch) != epoch:
            print(f"Kept the weights of epoch {history['best_epoch']}, the best val_loss.")
        return history

    def predict(self, X, batch_size=128):
        """The network's outputs for X, computed in batches, in inference mode (batches of 128
        keep a convolution's im2col matrix in the processor's cache)."""
        X = _checked_inputs(X, self.astype(self.dtype).dtype)  # layers that disagree: cast
        _check_whole(batch_size, "batch_size")
        return np.concatenate([self.forward(X[i:i + batch_size])
                               for i in range(0, len(X), batch_size)])

    def input_gradient(self, X, target):
        """d P[b, target[b]] / d X[b]: how each input number moves the output `target` (the
        probability of that class) for each example b of X, in inference mode; the shape of X.
        Positive where more of the input (more ink on that pixel) raises it: why the network
        answers what it does. target: a class for every row, or one for all of them.

        The same backward pass as training, started from L = sum_b P[b, target[b]] instead of
        the loss. P[b] is the network's output for example b alone (in inference no layer
        mixes the examples), so dL/dX[b] = dP[b, target[b]]/dX[b]; and dL/dP is 1 at each
        row's target and 0 elsewhere. Every layer then hands dL/d(its input) back as in
        backward, down to the first layer's input, which training never needs. Overwrites the
        layers' gradient arrays, as compute_gradients does."""
        X = _checked_inputs(X, self.astype(self.dtype).dtype)  # layers that disagree: cast
        P = self.forward(X)
        target = _checked_labels(np.full(len(P), target) if np.ndim(target) == 0 else target,
                                 P.shape[1], "input_gradient target")   # one class for all rows
        if len(target) != len(P):
            raise ValueError(f"input_gradient target must be one class, or one for each of the "
                             f"{len(P)} rows of X, got {len(target)}")
        grad = np.zeros_like(P)
        grad[np.arange(len(P)), target] = 1             # dL/dP
        with np.errstate(under="ignore"):
            for layer in reversed(self.layers):
                needed, layer.input_gradient_needed = layer.input_gradient_needed, True
                try:
                    grad = layer.backward(grad)
                finally:
                    layer.input_gradient_needed = needed
        return grad

    def evaluate(self, X, Y, batch_size=128):
        """(mean loss, accuracy) on X and targets Y; accuracy is None for a regression."""
        X, Y = _checked_batch(self, X, Y)
        P = self.predict(X, batch_size)
        return self.loss(Y, P), self.accuracy(Y, P)

    # -- saving and loading: the formats are in the appendix ---------------------------------------

    def save(self, path):
        """Write the architecture and parameters to a .npz file, all or nothing, no pickles."""
        _save_network(self, path)

    @classmethod
    def load(cls, path, custom_objects=None):
        """Rebuild a saved network from its file alone. Never unpickles anything.

        A network with layers of your own needs their classes, as Keras's custom_objects:
        Network.load(path, custom_objects={"Scale": Scale}).
        """
        return _load_network(cls, path, custom_objects)


# ----------------------------------------------------------------------------------------------
# Optimizers: how the gradients change the parameters
#
# A gradient says which way is uphill; an optimizer decides how far to step the other way.
# SGD steps along the gradient (with momentum, along its running sum); Adam scales each
# parameter's step by the size of its recent gradients.
# ----------------------------------------------------------------------------------------------

def state_for(pairs, state):
    """An optimizer's arrays for each parameter of `pairs` (velocities, moments): zeros at the
    first step, and afresh if the parameters changed; else `state` as it is."""
    if state is None or [s.shape for s in state] != [param.shape for param, _ in pairs] \
            or any(s.dtype != param.dtype for s, (param, _) in zip(state, pairs)):
        state = [np.zeros_like(param) for param, _ in pairs]
    return state


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
        _check_optimizer_numbers("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay,
                                 lr_decay=lr_decay)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.lr_decay = lr_decay
        self.velocities = None               # one per parameter, made at the first step

    def step(self, pairs):
        """Update each parameter in place from its gradient; pairs: (parameter, gradient)."""
        pairs = list(pairs)
        if self.momentum:
            self.velocities = state_for(pairs, self.velocities)
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

    def __repr__(self):
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, "
                f"weight_decay={self.weight_decay:g}, lr_decay={self.lr_decay:g})")


class Adam:
    """Adam, by PyTorch's rule (torch.optim.Adam), step t = 1, 2, ...:

        g = grad + weight_decay * w                 (L2 weight decay, added to the gradient)
        m = beta1 * m + (1 - beta1) * g             (first moment: a running mean of g)
        v = beta2 * v + (1 - beta2) * g^2           (second moment: a running mean of g^2)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        w = w - lr * m_hat / (sqrt(v_hat) + eps)

    m smooths the gradient's direction, like momentum. sqrt(v) measures each parameter's typical
    gradient size, so dividing by it gives every parameter a step of about lr, whether its
    gradients are large or tiny. m and v start at 0, so early on they are too small by the
    factors 1 - beta^t; the bias correction divides that out. eps keeps the division finite
    where v_hat is 0. lr_decay works as in SGD.
    """

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 lr_decay=1.0):
        _check_optimizer_numbers("Adam", lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                 weight_decay=weight_decay, lr_decay=lr_decay)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay, self.lr_decay = weight_decay, lr_decay
        self.t, self.m, self.v = 0, None, None

    def step(self, pairs):
        """Update each parameter in place from its gradient; pairs: (parameter, gradient)."""
        pairs = list(pairs)
        self.m = state_for(pairs, self.m)
        self.v = state_for(pairs, self.v)
        self.t += 1
        bias1, bias2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for (param, grad), m, v in zip(pairs, self.m, self.v):
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            denominator = np.sqrt(v / bias2)     # sqrt(v_hat)
            denominator += self.eps
            param -= (self.lr / bias1) * m / denominator

    def end_epoch(self):
        """Called by fit after every epoch."""
        self.lr *= self.lr_decay

    def __repr__(self):        # beta1, beta2 and eps only where they are not PyTorch's defaults
        options = "".join(f", {name}={value:g}" for name, value, default
                          in (("beta1", self.beta1, 0.9), ("beta2", self.beta2, 0.999),
                              ("eps", self.eps, 1e-8)) if value != default)
        return (f"Adam(lr={self.lr:g}{options}, weight_decay={self.weight_decay:g}, "
                f"lr_decay={self.lr_decay:g})")


# ==============================================================================================
# PART II: THE APPENDIX
#
# What the chapter leans on but a learner need not read first, in sections A to F: checking
# what users pass in, the machinery fit uses around the learning, the save format,
# check_gradients, the memory-layout helpers that make the convolutional layers fast, and the
# way to nn_parallel.py for fit(workers=N).
# ==============================================================================================

import contextlib             # the appendix's own imports: Part I needs only NumPy, sys and time
import copy
import inspect
import json
import math
import os
import shutil
import zipfile
import zlib

# ----------------------------------------------------------------------------------------------
# A. Checking arguments and data
#
# One rule per argument: a mistake becomes a ValueError naming the argument, what was expected
# and what came. Sizes have fixed limits, far above anything this file trains, so that no
# argument can make a layer allocate or compute without bound:
# ----------------------------------------------------------------------------------------------

MAX_STORED_VALUES = 50_000_000   # parameters of a layer, and of a model file: 200 MB of float32
MAX_WINDOW = 64                  # Conv2D kernel_size and stride, MaxPool2D size (padding < kernel)


def _check_number(value, name, expected, rule):
    """A real number, not a bool, within a float's range (10**309 is not), for which
    rule(value) holds, returned as a float; `expected` says the rule in words ("> 0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not abs(value) <= sys.float_info.max or not rule(value):     # NaN: not <=
        raise ValueError(f"{name} must be a number {expected}, got {value!r}")
    return float(value)


def _check_whole(value, name, minimum=1, maximum=None):
    """A whole number >= minimum (and <= maximum): an int, not a bool, not a float such as 2.0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or maximum is not None and value > maximum:
        what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        what += "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_seed(seed, name="seed"):
    if seed is not None:
        _check_whole(seed, name, 0)


def _check_float_dtype(dtype, name):
    if dtype not in (np.float32, np.float64, "float32", "float64"):    # np.dtype(...) too
        raise ValueError(f"{name} must be np.float32 or np.float64, got {dtype!r}")


def _check_layer(kind, weights, seed, dtype):
    """What Dense, Conv2D and BatchNorm share: a bound on weights, a seed or None, a dtype."""
    if weights > MAX_STORED_VALUES:
        raise ValueError(f"{kind} would hold {weights:,} weights, more than the "
                         f"{MAX_STORED_VALUES:,} (MAX_STORED_VALUES) a layer may have")
    _check_seed(seed, f"{kind} seed")
    _check_float_dtype(dtype, f"{kind} dtype")


def _check_dense_arguments(n_in, n_out, seed, init, dtype):
    _check_whole(n_in, "Dense n_in (number of inputs)")
    _check_whole(n_out, "Dense n_out (number of outputs)")
    if init not in ("he", "glorot"):
        raise ValueError(f"Dense init must be 'he' or 'glorot', got {init!r}")
    _check_layer("Dense", n_in * n_out, seed, dtype)


def _check_conv_arguments(in_channels, out_channels, kernel_size, stride, padding, seed, dtype):
    _check_whole(in_channels, "Conv2D in_channels")
    _check_whole(out_channels, "Conv2D out_channels")
    _check_whole(kernel_size, "Conv2D kernel_size", maximum=MAX_WINDOW)
    _check_whole(stride, "Conv2D stride", maximum=MAX_WINDOW)
    _check_whole(padding, "Conv2D padding", 0, maximum=kernel_size - 1)   # more: rims of zeros
    _check_layer("Conv2D", out_channels * in_channels * kernel_size ** 2, seed, dtype)


def _check_batchnorm_arguments(n, momentum, eps, dtype):
    _check_whole(n, "BatchNorm n")
    _check_number(momentum, "BatchNorm momentum", "in [0, 1]", lambda x: 0 <= x <= 1)
    _check_number(eps, "BatchNorm eps", "> 0", lambda x: x > 0)
    _check_layer("BatchNorm", 2 * n, None, dtype)


def _check_reshape(shape):
    if not isinstance(shape, (tuple, list)) or not shape:
        raise ValueError(f"Reshape shape must be a tuple of positive whole numbers, got {shape!r}")
    for size in shape:
        _check_whole(size, f"each size in Reshape shape {shape!r}")


def _check_optimizer_numbers(kind, lr, weight_decay, lr_decay, momentum=0.0, beta1=0.0,
                             beta2=0.0, eps=1.0):
    """SGD's and Adam's numbers, by PyTorch's rules."""
    _check_number(lr, f"{kind} lr", "> 0", lambda x: x > 0)
    _check_number(weight_decay, f"{kind} weight_decay", ">= 0", lambda x: x >= 0)
    _check_number(lr_decay, f"{kind} lr_decay", "in (0, 1]", lambda x: 0 < x <= 1)
    _check_number(momentum, f"{kind} momentum", ">= 0", lambda x: x >= 0)
    _check_number(beta1, f"{kind} beta1", "in [0, 1)", lambda x: 0 <= x < 1)
    _check_number(beta2, f"{kind} beta2", "in [0, 1)", lambda x: 0 <= x < 1)
    _check_number(eps, f"{kind} eps", "> 0", lambda x: x > 0)


def _check_optimizer(optimizer):
    if isinstance(optimizer, type) or not hasattr(optimizer, "step") \
            or not hasattr(optimizer, "end_epoch"):
        came = (f"the class {optimizer.__name__} itself: call it, {optimizer.__name__}(...)"
                if isinstance(optimizer, type) else repr(optimizer))
        raise ValueError(f"optimizer must be an optimizer object such as SGD(lr=0.1) or "
                         f"Adam(), got {came}")


def _checked_labels(labels, n_classes, name="labels"):
    _check_whole(n_classes, "n_classes", maximum=MAX_STORED_VALUES)   # a Dense layer's most
    labels = np.asarray(labels)
    expected = f"{name} must be a 1-D array of whole numbers 0..{n_classes - 1}"
    if labels.ndim != 1 or labels.dtype.kind not in "iuf":
        raise ValueError(f"{expected}, got shape {labels.shape} and dtype {labels.dtype}")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((labels >= 0) & (labels < n_classes)
                               & (labels == np.round(labels))))   # NaN too
    if bad.size:
        raise ValueError(f"{expected}, got {labels[bad[0]]} at index {bad[0]}")
    return labels.astype(np.intp)


def _checked_layers(layers, loss):
    """Network's layers, as a list, and its loss."""
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(sorted(LOSSES))}")
    if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"Network needs a list of layers (at least one), e.g. [Dense(784, 10), "
                         f"Softmax()], got {layers!r}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ValueError(f"layer {i} must be a Layer (e.g. Dense, ReLU), got {layer!r}")
        first = [id(other) for other in layers].index(id(layer))
        if first < i:
            raise ValueError(f"layers {first} and {i} are the same {layer!r} object: "
                             f"a layer remembers its last input for backward, so it cannot "
                             f"stand in two places; create a separate layer for each place")
    return list(layers)


def _checked_inputs(X, dtype, name="X", rows="one example per row: shape (examples, ...)"):
    """X as a C-ordered array of `dtype`, checked: real, finite numbers, `rows` per example."""
    X = np.asarray(X)
    if X.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim < 2 or len(X) == 0:
        raise ValueError(f"{name} must have {rows}, got shape {X.shape}")
    # One cast and at most one copy, up front: float64 data would make every product of every
    # batch float64 (about twice as slow), and taking a batch of rows from a column-major array
    # (what pandas' to_numpy() often returns) is over ten times slower than from a row-major one.
    with np.errstate(over="ignore"):     # beyond float32's range becomes inf, refused below
        X = np.ascontiguousarray(X, dtype=dtype)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} must hold finite numbers (in the network's dtype, "
                         f"{X.dtype}), but it contains NaN or infinity")
    return X


def _checked_data(X, Y, dtype, names=("X", "Y")):
    X = _checked_inputs(X, dtype, names[0])
    Y = _checked_inputs(Y, dtype, names[1], "one target row per example, e.g. one-hot rows "
                                            "(one_hot(labels, classes) makes them)")
    if len(X) != len(Y):
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of rows, "
                         f"got {len(X)} and {len(Y)}")
    return X, Y


def _checked_batch(net, X, Y, names=("X", "Y")):
    """X and Y in the network's dtype, checked, and against its outputs P on a few examples:
    the same shape and, for a cross-entropy, probabilities on both sides."""
    X, Y = _checked_data(X, Y, net.astype(net.dtype).dtype, names)   # one dtype, Network.dtype
    P, name, needed = net.forward(X[:32]), names[1], LOSSES[net.loss_name][2]
    if Y.shape[1:] != P.shape[1:]:
        raise ValueError(f"{name} must have shape (examples, {', '.join(map(str, P.shape[1:]))}), "
                         f"the shape of the network's output (one_hot(labels, {P.shape[1]}) "
                         f"makes one-hot rows), got shape {Y.shape}")
    if needed is not None and (P.min() < 0 or P.max() > 1):     # mse (None): any numbers
        raise ValueError(f"loss {net.loss_name!r} needs probabilities: add {needed.__name__}() "
                         f"at the end (or use loss='mse'); the last layer, {net.layers[-1]!r}, "
                         f"gave values from {P.min():g} to {P.max():g}")
    rows = needed is Softmax                 # categorical: each row a distribution
    if needed is not None and (Y.min() < 0 or Y.max() > 1
                               or rows and np.abs(Y.sum(axis=1) - 1).max() > 1e-3):
        expected = "rows of probabilities that sum to 1" if rows else "probabilities in [0, 1]"
        raise ValueError(f"with {net.loss_name} the targets {name} must be {expected} (one-hot "
                         f"rows are), got values from {Y.min():g} to {Y.max():g}")
    return X, Y


def _prepared_fit(net, X, Y, epochs, batch_size, optimizer, validation_data, seed, patience,
                  workers, callbacks):
    """fit's arguments checked before any work and its defaults filled in, its data cast, its
    random layers seeded, and the kind of accuracy decided once, from all the targets."""
    optimizer = SGD(lr=0.01) if optimizer is None else optimizer
    callbacks = [] if callbacks is None else callbacks
    _check_whole(epochs, "epochs")
    _check_whole(batch_size, "batch_size")
    _check_whole(workers, "workers", maximum=max_workers())   # the cores, on Linux; 1 elsewhere
    _check_seed(seed)
    if patience is not None:
        _check_whole(patience, "patience")
    if patience is not None and validation_data is None:
        raise ValueError("patience (early stopping) watches the validation loss, so fit "
                         "needs validation_data=(X_val, Y_val) too")
    if not isinstance(callbacks, (list, tuple)) or not all(
            any(name.startswith("on_") for name in dir(callback)) for callback in callbacks):
        raise ValueError(f"callbacks must be a list of objects with some of fit's methods, "
                         f"such as on_epoch_end(epoch, logs), got {callbacks!r}")
    _check_optimizer(optimizer)
    X, Y = _checked_batch(net, X, Y)
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise ValueError("validation_data must be a pair (X_val, Y_val)")
        validation_data = _checked_batch(net, *validation_data, ("X_val", "Y_val"))
    for i, layer in enumerate(net.layers):   # a seeded fit: each random layer its own seed
        if seed is not None and hasattr(layer, "reseed"):
            layer.reseed([seed, i])
    net.accuracy_kind = accuracy_kind(Y)
    return X, Y, validation_data, optimizer, callbacks


# ----------------------------------------------------------------------------------------------
# B. Around the learning: dtypes, where layers keep their arrays, divergence, fit's reports
# ----------------------------------------------------------------------------------------------

def _cast_parameters(layers, dtype):
    """Make every parameter, gradient and buffer array `dtype` (arrays already of it stay)."""
    arrays = [(layer, array) for layer in layers for pair in layer.parameters() for array in pair]
    arrays += [(layer, array) for layer in layers for array in layer.buffers()]
    replace_arrays(arrays, lambda array: array if array.dtype == dtype else array.astype(dtype))


def replace_arrays(layer_arrays, new_array):
    """For each (layer, array), put new_array(array) wherever the layer keeps that array as an
    attribute, self.<name> (how Network.astype casts them and fit(workers=N) shares them). Tied
    weights get one new array for all their layers; every layer is checked before any is
    changed. Returns the (layer, array, new) replacements made."""
    made = {id(array): array for _, array in layer_arrays}         # each array once
    made = {key: new_array(array) for key, array in made.items()}
    swaps = [(layer, array, made[id(array)]) for layer, array in layer_arrays
             if made[id(array)] is not array]
    names = [_attribute_names(layer, array) for layer, array, _ in swaps]
    for (layer, _, new), attributes in zip(swaps, names):
        for name in attributes:
            setattr(layer, name, new)
    return swaps


def _attribute_names(layer, array, required=True):
    names = [name for name, value in vars(layer).items() if value is array]
    if not names and required:
        raise ValueError(f"{layer!r} returns from parameters() or buffers() an array that is "
                         f"not one of its attributes, so nn cannot cast it or share it with "
                         f"fit's processes: keep each parameter, gradient, buffer as self.<name>")
    return names


def _state(layers):
    """What the layers have learned: each one's parameters, then its buffers."""
    return [array for layer in layers
            for array in [param for param, _ in layer.parameters()] + list(layer.buffers())]


class LayerError(ValueError):
    """A layer's forward or backward returned nothing usable: Network names the layer."""


def _check_returned(i, layer, method, expected, value, shape=None):
    """Network.forward and backward name the layer whose forward or backward returned no array
    (a missing `return`), or a gradient of the wrong shape, before another layer trips on it."""
    if not isinstance(value, np.ndarray) or shape not in (None, value.shape):
        wanted = "an array" + ("" if shape is None else f" of shape {shape}, its input's shape")
        hint = " (is a `return` missing?)" if value is None else ""
        raise LayerError(f"layer {i} ({layer!r}): {method} returned {_described(value)}; "
                         f"expected {expected}, {wanted}{hint}")


def _divergence(what, optimizer):
    """The error for a loss or weights no longer finite: when, and what to try."""
    return FloatingPointError(
        f"{what}: the weights have diverged. Try a smaller learning rate (the optimizer is "
        f"{optimizer!r}), or inputs scaled to about [0, 1]; a layer of your own may give NaN or "
        f"infinity: check_gradients(layer, x) tests it")


@contextlib.contextmanager
def _training(callbacks):
    """fit's callbacks: yields tell(event, *arguments), which calls each callback's method
    `event` (those that have it); tells on_train_begin, and on_train_end however fit ends."""
    def tell(event, *arguments):
        for callback in callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(*arguments)
    tell("on_train_begin")
    try:
        yield tell
    finally:
        tell("on_train_end")


PROGRESS_SECONDS = 0.5           # fit's live counter is redrawn at most this often


def _say_if_at_chance(X, Y, accuracy, optimizer):
    """After fit's first epoch on one-hot targets Y: if the accuracy is no better than chance,
    one line that says so and the likeliest cause the inputs X and the optimizer show."""
    if accuracy > 1 / Y.shape[1] + 0.05:
        return
    largest = float(max(X.max(), -X.min()))
    usual = {SGD: 0.1, Adam: 0.001}.get(type(optimizer))     # learning rates that work here
    cause = "do the labels belong to the inputs?"
    if largest > 10:
        cause = f"the inputs go up to {largest:g}: scale them to [0, 1] (X / {largest:g})"
    elif usual and optimizer.lr > 10 * usual:
        cause = (f"lr is {optimizer.lr:g}, far above the usual {usual:g} for "
                 f"{type(optimizer).__name__}: try {usual:g}")
    print(f"Accuracy {accuracy:.4f} after epoch 1 is chance for {Y.shape[1]} classes: {cause}")


# ----------------------------------------------------------------------------------------------
# C. Saving and loading
#
# A model file is a NumPy .npz archive (a zip of .npy arrays): "architecture", a JSON string
# of the format, the loss, input_shape and each layer's type and config(); "layer{i}_{j}", the
# j-th parameter of layer i; "layer{i}_buffer{j}", its j-th buffer. Saving is all or nothing
# (atomic_file) and refuses NaN or infinite weights. Loading never unpickles and, as
# safetensors does, checks what the file declares (sizes, headers, configs) against its real
# sizes and one budget, MAX_MODEL_BYTES, before it builds from it.
# ----------------------------------------------------------------------------------------------

MODEL_FORMAT = "nn.Network v3"
LAYER_TYPES = {cls.__name__: cls for cls in (Dense, ReLU, Sigmoid, Tanh, LeakyReLU, Softmax,
                                             Dropout, Conv2D, MaxPool2D, Flatten, Reshape,
                                             BatchNorm, RandomShift)}
MAX_MODEL_BYTES = 2 ** 30        # the budget: loading a model, and a batch through it (1 GiB)
PREDICT_BATCH = 128              # predict's batch, as the budget counts it
LOAD_FACTOR = 4                  # loading holds at most 4x a file's arrays: each parameter
                                 # with its gradient, and what its constructor drew first
MAX_LAYERS = 1000
MAX_HEADER_BYTES = 10_000        # an array's .npy header, as NumPy's reader is told


def _save_network(net, path):
    path = _checked_path(path)
    arrays, architecture = {}, []
    for i, layer in enumerate(net.layers):
        architecture.append({"type": type(layer).__name__, "config": _saved_config(i, layer)})
        for name, what, array in _stored_arrays(i, layer):
            if not np.all(np.isfinite(array)):
                raise ValueError(f"cannot save layer {i} ({layer!r}): its {what} holds NaN or "
                                 f"infinity, so the model is broken")
            arrays[name] = array
    input_shape = net.input_shape
    n_in = net.layers[0].config().get("n_in")    # a first layer that names its inputs (Dense)
    if input_shape is None and isinstance(n_in, int):               # known without a run
        input_shape = (n_in,)
    if input_shape is None:
        raise ValueError("cannot save a network that has never seen an example: run it once "
                         "(fit, predict or evaluate), so that the file can say what it takes")
    description = {"format": MODEL_FORMAT, "loss": net.loss_name,
                   "input_shape": [int(d) for d in input_shape], "layers": architecture}
    arrays["architecture"] = np.array(json.dumps(description))   # a plain string array
    with atomic_file(path, suffix=".npz") as file:
        np.savez(file, **arrays)


def _saved_config(i, layer):
    """Layer i's config(), once it is sure that load can rebuild the layer from it."""
    cls, kind, config = type(layer), type(layer).__name__, layer.config()
    if LAYER_TYPES.get(kind, cls) is not cls:
        raise ValueError(f"cannot save layer {i} ({layer!r}): its class has the name of nn's "
                         f"own {kind}, so loading would build nn's {kind}; rename the class")
    try:
        ok = isinstance(config, dict) and json.dumps(config, allow_nan=False)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"cannot save layer {i} ({layer!r}): its config() must return a dict "
                         f"of numbers, strings and lists, got {config!r}")
    missing = [p.name for p in inspect.signature(cls).parameters.values() if p.name not in config
               and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise ValueError(f"cannot save layer {i} ({layer!r}): {kind}() needs "
                         f"{', '.join(missing)}, which its config() does not give, so it "
                         f"could not be loaded; return them from config()")
    return config


def _checked_path(path):
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise ValueError(f"path must be a file name (a str or a pathlib.Path), got {path!r}")
    return os.fspath(path)


def _stored_arrays(i, layer):
    """(name in the file, what it is, array) for each parameter and buffer of layer i."""
    return ([(f"layer{i}_{j}", f"parameter {j}", param)
             for j, (param, _) in enumerate(layer.parameters())]
            + [(f"layer{i}_buffer{j}", f"buffer {j}", array)
               for j, array in enumerate(layer.buffers())])


@contextlib.contextmanager
def atomic_file(path, mode="wb", suffix="", **options):
    """`with atomic_file(path) as file:` writes a temporary file beside `path`, put on disk and
    renamed over `path` once the block ends well; an exception (Ctrl-C too) removes it. So
    `path` is the old file or the new one, never half of either (a killed process may leave a
    '.nn-save-*' file). No signal handler is installed. An existing `path` keeps its
    permissions; a new one gets open()'s (0666 less the umask). `options` go to open()."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".nn-save-{os.urandom(6).hex()}{suffix}")
    file = open(temporary, mode.replace("w", "x"), **options)     # x: a new file, never another's
    try:
        with file:
            if os.path.exists(path):
                shutil.copymode(path, temporary)
            yield file
            file.flush()
            os.fsync(file.fileno())          # on disk before the rename makes it visible
        os.replace(temporary, path)          # atomic: readers see the old file or the new one
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _load_network(network_class, path, custom_objects):
    path = _checked_path(path)
    custom = {} if custom_objects is None else custom_objects
    if not (isinstance(custom, dict) and all(isinstance(name, str) and isinstance(cls, type)
                                             and issubclass(cls, Layer)
                                             for name, cls in custom.items())):
        raise ValueError(f"custom_objects must be a dict of Layer classes by their names, e.g. "
                         f"{{'Scale': Scale}}, got {custom_objects!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:                                     # zipfile's own checks: its directory, each CRC
        with zipfile.ZipFile(path) as archive:
            return _read_network(network_class, path, archive, {**LAYER_TYPES, **custom})
    except (OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
        raise _refuse(path, f"not a NumPy .npz archive, or a damaged one ({error})") from None


def _read_network(network_class, path, archive, known):
    """The network in the archive. What the file declares is checked first: its members and
    their sizes, the architecture. Then each layer is built, filled and run on a test example
    (random numbers in [0, 1), like pixels): the layers' arrays, and what each keeps for the
    example (its output, the arrays it did not hold when built) times PREDICT_BATCH, must fit
    in the budget; a Conv2D's im2col matrix is counted before it is made."""
    members = archive.infolist()
    for member in members:
        if not member.filename.endswith(".npy") or member.flag_bits & 1 or \
                member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(path, f"unexpected member {member.filename!r} (expected .npy arrays, "
                                f"stored or deflated, not encrypted)")
    declared = sum(member.file_size for member in members)      # bytes, unpacked
    if LOAD_FACTOR * declared > MAX_MODEL_BYTES:
        raise _over_budget(path, f"its arrays, {declared:,} bytes unpacked, held "
                                 f"{LOAD_FACTOR} times over while loading")
    text = str(_read_array(path, archive, "architecture", "the architecture"))
    description = _checked_architecture(path, text, known, declared)
    x = np.random.default_rng(0).random((1, *description["input_shape"]))
    layers, used = [], 0                     # bytes
    for i, spec in enumerate(description["layers"]):
        layer = _rebuild_layer(path, i, spec, known, archive)
        if layer.parameters() and not any(earlier.parameters() for earlier in layers):
            x = x.astype(layer.parameters()[0][0].dtype)      # the network's, as predict casts
        own = [value for value in vars(layer).values() if isinstance(value, np.ndarray)]
        used += sum(array.nbytes for array in own)
        columns = 0
        if isinstance(layer, Conv2D) and x.ndim == 4:
            k, places = layer.kernel_size, _conv_output_shape(*x.shape[2:], layer.kernel_size,
                                                              layer.stride, layer.padding)
            columns = PREDICT_BATCH * x.itemsize * x.shape[1] * k * k * math.prod(places)
        if used + columns > MAX_MODEL_BYTES:
            raise _over_budget(path, f"layer {i} ({layer!r}) and those before it, with a batch "
                                     f"of {PREDICT_BATCH} examples")
        layer.training = False
        try:
            with np.errstate(all="ignore"):
                output = layer.forward(x)
            kept = [output] + [value for value in vars(layer).values() if isinstance(
                value, np.ndarray) and not any(value is array for array in own)]
            used += PREDICT_BATCH * sum(array.nbytes for array in kept)
        except (ValueError, IndexError, TypeError, AttributeError, MemoryError) as error:
            raise _refuse(path, f"layer {i} ({layer!r}) cannot take an example of shape "
                                f"{x.shape[1:]} ({error})") from None
        x = output
        layers.append(layer)
    if used > MAX_MODEL_BYTES:
        raise _over_budget(path, f"its layers, with a batch of {PREDICT_BATCH} examples")
    if not np.all(np.isfinite(x)):
        raise _refuse(path, "its output for an example is NaN or infinite (weights too large?), "
                            "so its answers would mean nothing")
    unused = {member.filename[:-len(".npy")] for member in members} - {"architecture"} - {
        name for i, layer in enumerate(layers) for name, *_ in _stored_arrays(i, layer)}
    if unused:
        raise _refuse(path, f"it holds arrays no layer uses: {sorted(unused)}")
    net = network_class(layers, loss=description["loss"])
    net.input_shape = tuple(description["input_shape"])
    return net


def _read_array(path, archive, name, what):
    """The array `name` (`what` it is for), read the safetensors way: its .npy header by
    NumPy's own reader (at most MAX_HEADER_BYTES), then data of exactly the size the header
    claims (no read goes beyond what the zip declared, which the budget allowed); float32 or
    float64 numbers, all finite, or (the architecture) one text under 4 MiB."""
    try:
        member = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise _refuse(path, f"{what} is missing (no array {name!r})") from None
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    with archive.open(member) as file:
        try:                                 # NumPy's parser raises what its tokenizer raises
            read = readers[np.lib.format.read_magic(file)]
            shape, fortran_order, dtype = read(file, max_header_size=MAX_HEADER_BYTES)
        except Exception as error:
            raise _refuse(path, f"array {name!r} has a damaged header ({type(error).__name__}); "
                                f"expected a .npy header of at most {MAX_HEADER_BYTES:,} bytes") \
                from None
        data = file.read()
    size = math.prod(shape) * dtype.itemsize
    if size != len(data):
        raise _refuse(path, f"array {name!r} claims {size:,} bytes of data; its member holds "
                            f"{len(data):,}")
    if dtype not in (np.float32, np.float64) and not (
            name == "architecture" and dtype.kind == "U" and shape == () and size < 2 ** 22):
        raise _refuse(path, f"array {name!r} has dtype {dtype}, expected float32 or float64")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")
    if dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise _refuse(path, f"array {name!r} holds NaN or infinity")
    return array


def _checked_architecture(path, text, known, declared):
    """The file's description of the network, checked before anything is built: its form, an
    input_shape whose batch fits in the budget, and for each layer a known type and a config
    whose whole numbers (the sizes a constructor allocates: Dense(10**6, 10**6) would take
    4 TB) multiply to no more than the file has bytes."""
    try:
        description = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _refuse(path, f"its architecture is not valid JSON ({type(error).__name__})") \
            from None
    get = description.get if isinstance(description, dict) else {}.get
    if get("format") == "nn.Network v2":
        raise _refuse(path, "it was saved by an earlier nn.py, which did not record the shape "
                            "of an example; load it there, run it once and save it again")
    specs, shape = get("layers"), get("input_shape")
    if not (get("format") == MODEL_FORMAT and get("loss") in list(LOSSES)
            and isinstance(shape, list) and shape and all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            and isinstance(specs, list) and 0 < len(specs) <= MAX_LAYERS and all(
                isinstance(spec, dict) and isinstance(spec.get("type"), str)
                and isinstance(spec.get("config"), dict) for spec in specs)):
        raise _refuse(path, f"its architecture must be {{'format': {MODEL_FORMAT!r}, 'loss': "
                            f"one of {sorted(LOSSES)}, 'input_shape': [positive whole numbers], "
                            f"'layers': [1 to {MAX_LAYERS} of {{'type': ..., 'config': {{...}}}}]}}"
                            f", got {text[:100]!r}")
    if PREDICT_BATCH * math.prod(shape) * 8 > MAX_MODEL_BYTES:
        raise _over_budget(path, f"its input_shape {shape}, in a batch of {PREDICT_BATCH}")
    for i, spec in enumerate(specs):
        kind, config = spec["type"], spec["config"]
        if kind not in known:
            raise ValueError(f"{path}: layer {i} is a {kind!r}, which nn.py does not know; if it "
                             f"is a layer class of your own, pass it: Network.load(path, "
                             f"custom_objects={{{kind!r}: {kind}}})")
        numbers = [v for value in config.values() for v in (value if isinstance(value, list)
                                                             else [value])]
        if math.prod(abs(v) for v in numbers if isinstance(v, int) and not isinstance(v, bool)
                     and v != 0) > max(declared, 2 ** 22):
            raise _refuse(path, f"layer {i} ({kind}) claims sizes {config} far beyond the "
                                f"file's {declared:,} bytes")
    return description


def _rebuild_layer(path, i, spec, known, archive):
    """Layer i built from its spec, cast to the dtype of its arrays in the file, and filled
    with them: each must have the shape the layer gives it (and the dtype of the first)."""
    kind, config = spec["type"], spec["config"]
    try:
        layer = known[kind](**config)
    except (TypeError, ValueError, MemoryError) as error:
        raise _refuse(path, f"layer {i} ({kind} with {config}) cannot be built: {error}") \
            from None
    stored = [_read_array(path, archive, name, f"layer {i} ({layer!r}) {what}")
              for name, what, _ in _stored_arrays(i, layer)]
    if stored:
        _cast_parameters([layer], stored[0].dtype)
    for (name, what, array), data in zip(_stored_arrays(i, layer), stored):
        if (data.shape, data.dtype) != (array.shape, array.dtype):
            raise _refuse(path, f"layer {i} ({layer!r}) {what} has shape {data.shape} and dtype "
                                f"{data.dtype}, expected {array.shape} and {array.dtype}")
        array[...] = data
    return layer


def _refuse(path, why):
    return ValueError(f"{path} is not a model saved by nn.Network.save: {why}")


def _over_budget(path, what):
    return ValueError(f"{path} is a model larger than nn loads: {what}, would take more than "
                      f"nn.MAX_MODEL_BYTES ({MAX_MODEL_BYTES:,} bytes); if you trust the file "
                      f"and have the memory, raise nn.MAX_MODEL_BYTES")


# ----------------------------------------------------------------------------------------------
# D. check_gradients: is backward right? Compare it with finite differences.
#
# A right backward gives a relative error of about 1e-10 in float64, a real mistake (a wrong
# element, a missing factor 2, the input and grad_output swapped) 1e-4 to 1. R has a random
# stream of its own: were it the learner's x (both the first draws of default_rng(0)), a mix-up
# of the input with grad_output would cancel out. What backward returns is checked before any
# number is: None, a wrong shape or dtype, NaN or inf is named and counts as wrong, never as 0.
# ----------------------------------------------------------------------------------------------

GRADIENT_THRESHOLD = 1e-6        # relative error: below it right, at or above it wrong
_UPSTREAM_STREAM = 0x6E6E_6772616473     # R's random stream: default_rng([this, seed])


class GradientReport(dict):
    """What check_gradients found: {array name: relative error}, the error inf where backward
    gave nothing to compare (None, a wrong shape, NaN or inf). `right` is the verdict: every
    error below GRADIENT_THRESHOLD and no problems; `problems` holds one line per problem."""

    def __init__(self, title, errors, problems):
        super().__init__(errors)
        self.title, self.problems = title, problems
        self.right = not problems and all(e < GRADIENT_THRESHOLD for e in errors.values())

    def __str__(self):
        verdict = (f"right (every relative error below {GRADIENT_THRESHOLD:g})" if self.right
                   else f"WRONG (right means a relative error below {GRADIENT_THRESHOLD:g})")
        lines = [f"check_gradients of {self.title}: {verdict}"]
        lines += [f"  {name:40s} {error:.1e}  {'right' if error < GRADIENT_THRESHOLD else 'wrong'}"
                  for name, error in self.items()]
        return "\n".join(lines + [f"  {problem}" for problem in self.problems])


def check_gradients(model, x, y=None, eps=1e-6, training=False, verbose=True, seed=0):
    """Compare the gradients backward computes with central differences, in float64.

    model  a Layer: checked on the loss L = sum(output * R) for a fixed random R (so that
           dL/d(output) = R); the gradient of the input and of every parameter are checked.
           Or a Network: checked on its own loss for targets y; every parameter is checked.
    x      a small batch of inputs (a few examples: each number costs two forward passes).
    training=True checks the layer as it trains; each pass then runs on a fresh copy of the
           model, so a random layer such as Dropout uses the same mask every time.
    seed   chooses R (from a random stream that no default_rng(seed) of yours shares).

    Prints (verbose) and returns a GradientReport, {array name: relative error} ("input",
    "weights", ...; "layer 2 Dense weights" in a network), whose `.right` is the verdict. The
    model is not changed: the check runs on a float64 copy. A central difference (f(w + eps) -
    f(w - eps)) / (2 eps) is off by about eps^2 times the third derivative: 1e-12 here.
    """
    is_network = isinstance(model, Network)
    if not (is_network or isinstance(model, Layer)):
        raise ValueError(f"check_gradients checks a Layer or a Network, got {model!r}")
    _check_number(eps, "check_gradients eps", "> 0", lambda e: e > 0)
    _check_whole(seed, "check_gradients seed", 0)
    if is_network and y is None:
        raise ValueError("check_gradients on a Network needs the targets y")
    names = ("check_gradients x", "check_gradients y")
    x, y = (_checked_data(x, y, np.float64, names) if is_network
            else (_checked_inputs(x, np.float64, names[0]), None))
    title = "the network" if is_network else repr(model)
    report = GradientReport(title, *_gradient_errors(model, x.copy(), y, eps, training, seed))
    if verbose:
        print(report)
    return report


def _gradient_errors(model, x, y, eps, training, seed):
    """check_gradients' findings, ({array name: relative error}, [problems]), on a float64
    copy of the model, the master; in training, each pass runs on a fresh copy of it. x is
    check_gradients' own copy: the numbers are nudged in place."""
    is_network = isinstance(model, Network)
    master = copy.deepcopy(model)
    layers = master.layers if is_network else [master]
    _cast_parameters(layers, np.float64)
    master.input_gradient_needed = True      # (a Network has no use for it)

    def forward():                           # (the model run, its output at x)
        target = copy.deepcopy(master) if training else master
        if is_network:
            return target, target.forward(x, training=training)
        target.training = training
        return target, target.forward(x)

    def slope(array, at, step):              # dL along `step` at array[at], central differences
        kept = array[at].copy()
        losses = []
        for sign in (1, -1):
            array[at] = kept + sign * eps * step
            target, out = forward()
            losses.append(target.loss(y, out) if is_network else float(np.sum(out * upstream)))
        array[at] = kept
        return (losses[0] - losses[1]) / (2 * eps)

    def gradients(target, out):              # what one backward gave, one per check
        given = [target.backward(y, out) if is_network else target.backward(upstream.copy())]
        given += [grad for twin in (target.layers if is_network else [target])
                  for _, grad in twin.parameters()]
        return [gradient.copy() if isinstance(gradient, np.ndarray) else gradient
                for gradient in (given[1:] if is_network else given)]

    # The arrays to check: (name, the master's array, what backward gave as its gradient,
    # e.g. "Scale(n=3): grad_scale is", and what that should be, "dL/d(scale)").
    where = [f"layer {i} ({layer!r})" if is_network else repr(layer)
             for i, layer in enumerate(layers)]
    checks = [] if is_network else [("input", x, f"{where[0]}.backward returned", "dL/d(input)")]
    for i, layer in enumerate(layers):
        for j, (param, grad) in enumerate(layer.parameters()):
            name = (_attribute_names(layer, param, required=False) or [f"parameter {j}"])[0]
            grad_name = (_attribute_names(layer, grad, required=False)
                         or [f"the gradient of {name}"])[0]
            checks.append((f"layer {i} {type(layer).__name__} {name}" if is_network else name,
                           param, f"{where[i]}: {grad_name} is", f"dL/d({name})"))

    # Analytic gradients: one forward, then backward twice with the same R (a gradient added to,
    # +=, instead of overwritten comes out twice as large the second time).
    try:
        target, out = forward()
        if not isinstance(out, np.ndarray):
            raise LayerError(f"{where[0]}: forward returned {_described(out)}; expected its "
                             f"output, an array (is a `return` missing?)")
        upstream = np.random.default_rng([_UPSTREAM_STREAM, seed]).standard_normal(out.shape)
        largest = max(float(np.abs(out).max(initial=0)), float(np.abs(x).max()))
        if math.isfinite(largest) and largest * np.finfo(np.float64).eps > eps / 100:
            raise ValueError(f"check_gradients cannot trust finite differences here: the "
                             f"numbers reach {largest:.1e}, where a step of eps={eps:g} is "
                             f"lost in rounding; scale x to ordinary sizes (or a larger eps)")
        first, second = gradients(target, out), gradients(target, out)
    except LayerError as error:              # a Network names the layer
        return {name: math.inf for name, *_ in checks}, [str(error)]

    # A float array of a layer that changes the output though neither parameters() nor
    # buffers() lists it would never train (nor be saved): nudge each and watch the output.
    problems, errors = [], {}
    listed = [x] + [array for layer in layers for array in
                    [a for pair in layer.parameters() for a in pair] + list(layer.buffers())]
    before = forward()[1].copy()             # a copy: a layer may keep its output and return it
    for layer, place in zip(layers, where):
        for name, value in list(vars(layer).items()):
            if not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size
                    and value.flags.writeable) or any(np.may_share_memory(value, array)
                                                      for array in listed):
                continue
            kept = value.copy()
            value += 1e-3 * (1 + np.abs(value))
            if not np.array_equal(forward()[1], before):
                problems.append(f"{place}: {name} changes the output but is not in "
                                f"parameters(): it will never train (or, if it must not, list "
                                f"it in buffers())")
            value[...] = kept

    # Numerical gradients: nudge each number of each array of the master, up and down.
    for (name, array, said, meaning), once, again in zip(checks, first, second):
        numerical = np.reshape([slope(array, index, 1) for index in np.ndindex(array.shape)],
                               array.shape)
        found = _gradient_problem(said, meaning, once, array.shape)
        if found is None and not np.all(np.isfinite(numerical)):
            found = (f"{name}: the finite differences are NaN or inf (the forward pass is not "
                     f"finite near this x), so nothing can be checked")
        errors[name] = math.inf if found else max(relative_error(once, numerical),
                                                  relative_error(again, numerical))
        if found is None and not relative_error(once, again) < GRADIENT_THRESHOLD:
            found = (f"{said} not the same when backward runs again with the same "
                     f"grad_output: overwrite a gradient (grad[...] = ...), never add to "
                     f"it (+=), and leave what forward remembered as it is")
        problems += [found] if found else []
    if problems or not all(error < GRADIENT_THRESHOLD for error in errors.values()):
        return errors, problems

    # A second look, at two or more examples of random numbers of both signs in place of x: a
    # backward right only at x (a ReLU's mask forgotten, on positive x; a mean for a sum, on
    # one example; anything, on an x whose gradient is 0) shows in the derivative along one
    # random direction per array: two forward passes per array.
    rng = np.random.default_rng([_UPSTREAM_STREAM, seed, 1])
    x = rng.standard_normal((max(2, len(x)),) + x.shape[1:])    # what every pass reads
    y = None if y is None else np.concatenate([y, y])[:len(x)]
    with np.errstate(all="ignore"):
        try:
            target, out = forward()
            upstream = rng.standard_normal(out.shape)
            given = gradients(target, out)
        except LayerError as error:          # a Network names the layer that returned it
            return errors, [f"{error} (at other examples)"]
        except Exception:                    # a layer of yours that takes only some inputs:
            return errors, problems          # your x was the check
        if not np.all(np.isfinite(out)):     # nor can a derivative be checked where the
            return errors, problems          # output is not finite
        for (name, array, said, meaning), gradient in zip(checks, given):
            array = x if name == "input" else array
            found, error = _gradient_problem(said, meaning, gradient, array.shape), math.inf
            if found is None:
                direction = rng.standard_normal(array.shape)
                numerical = slope(array, ..., direction)
                error = abs(float(np.sum(gradient * direction)) - numerical) / (
                    np.linalg.norm(gradient) * np.linalg.norm(direction) + abs(numerical))
                found = "does backward hold for every input and batch?"
            if error >= GRADIENT_THRESHOLD:          # (NaN: not defined there, not judged)
                errors[name] = error
                problems.append(f"{name}: right at this x, but not at other examples (random "
                                f"numbers of both signs): {found}")
    return errors, problems


def _described(value):
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _gradient_problem(said, meaning, gradient, shape):
    """One line on what is wrong with `gradient`, which should be `meaning` (dL/d(scale)), a
    float64 array of `shape`, or None if nothing is. `said` introduces it: "Scale(n=3):
    grad_scale is"."""
    if not (isinstance(gradient, np.ndarray) and gradient.shape == shape
            and gradient.dtype == np.float64):
        hint = " (is a `return` missing?)" if gradient is None else ""
        return (f"{said} {_described(gradient)}; expected {meaning}, a float64 array of shape "
                f"{shape}{hint}")
    if not np.all(np.isfinite(gradient)):
        return f"{said} an array holding NaN or inf"
    return None


def relative_error(analytic, numerical):
    """check_gradients' measure: |a - n| / (|a| + |n|), norms over whole arrays; 0 when they are
    equal, 1 when one of them is 0. Computed on the arrays divided by their largest number, so
    that no norm overflows."""
    largest = max(float(np.abs(analytic).max(initial=0)), float(np.abs(numerical).max(initial=0)))
    if largest == 0:
        return 0.0
    analytic, numerical = np.divide(analytic, largest), np.divide(numerical, largest)
    difference = np.linalg.norm(analytic - numerical)
    return float(difference / (np.linalg.norm(analytic) + np.linalg.norm(numerical)))


# ----------------------------------------------------------------------------------------------
# E. The convolutional layers' helpers: memory layout
#
# Inside im2col and col2im the numbers are kept as (channels, height, width, batch), and Conv2D
# hands on its output as a (batch, channels, height, width) *view* of them. NumPy pays a fixed
# cost for each run of neighbouring numbers it walks: with the batch innermost, every slice is
# made of runs `batch` long, not of short image rows. ReLU and MaxPool2D keep the memory order
# they are given, so the next Conv2D finds its input already in this layout.
# ----------------------------------------------------------------------------------------------

def _conv_output_shape(height, width, k, stride, padding):
    """(out_h, out_w): how many positions a k x k window takes down and across the image."""
    return (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1


def _zero_padded(x, p):
    """x (batch, channels, h, w) with p zeros around each image, as a contiguous
    (channels, h + 2p, w + 2p, batch) array."""
    x = x.transpose(1, 2, 3, 0)
    if p == 0:
        return np.ascontiguousarray(x)   # a copy only if x came in another layout (the data)
    padded = np.zeros((x.shape[0], x.shape[1] + 2 * p, x.shape[2] + 2 * p, x.shape[3]), x.dtype)
    padded[:, p:-p, p:-p] = x
    return padded


def _in_memory_order_of(like, array):
    """array (of like's shape) laid out in memory as like is. An element-wise operation whose
    operands walk memory in different orders runs several times slower (MaxPool2D's backward
    on the gradient that Flatten hands back in row order)."""
    if array.strides == like.strides:
        return array
    reordered = np.empty_like(like)
    reordered[...] = array
    return reordered


# ----------------------------------------------------------------------------------------------
# F. More than one core: fit(workers=N), in nn_parallel.py beside this file
# ----------------------------------------------------------------------------------------------

def max_workers():
    """The most processes fit(workers=...) can use here: the cores this process may run on, on
    Linux; 1 elsewhere (Windows has no os.fork, and on macOS forking a process whose BLAS,
    Accelerate, has run is not safe)."""
    return len(os.sched_getaffinity(0)) if sys.platform.startswith("linux") else 1


def _helper_processes(net, X, Y, workers, seed):
    """fit's helper processes for workers > 1 (nn_parallel.py, imported only then), as a
    context manager that stops them however fit ends; for workers=1 it yields None."""
    if workers == 1:
        return contextlib.nullcontext()
    try:
        import nn_parallel
    except ImportError as error:
        raise ImportError(f"workers={workers} needs nn_parallel.py beside nn.py (and "
                          f"threadpoolctl: pip install threadpoolctl); {error}") from None
    return nn_parallel.helper_processes(net, X, Y, workers, seed, replace_arrays)

"""Tests for nn.py: gradient checks of every piece through the public check_gradients, and
behaviour tests of the layers, losses, network, optimizers, saving and loading.

Run with:  python -m unittest -v
NN_SHOW_GRADIENT_ERRORS=1 python -m unittest test_nn   also prints the worst error of each piece.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
import warnings
import zipfile
from unittest import mock

import numpy as np

import exercises
import nn
from nn import (SGD, Adam, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, LeakyReLU,
                MaxPool2D, Network, RandomShift, ReLU, Reshape, Sigmoid, Softmax, Tanh,
                binary_crossentropy, binary_crossentropy_prime, categorical_crossentropy,
                categorical_crossentropy_prime, check_gradients, mse, mse_prime, one_hot)

# ----------------------------------------------------------------------------------------------
# Shared fixtures
# ----------------------------------------------------------------------------------------------

GRADIENT_TOLERANCE = nn.GRADIENT_THRESHOLD     # check_gradients' one threshold
WORST_ERRORS = {}                # piece -> worst relative error seen, printed at the end
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = one_hot([0, 1, 1, 0], 2, dtype=np.float64)


def blobs(n=300, seed=0, dtype=np.float32):
    """Three Gaussian clouds in 5 dimensions: a small problem a network can learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = rng.standard_normal((3, 5)) * 3
    X = (centres[labels] + rng.standard_normal((n, 5))).astype(dtype)
    return X, one_hot(labels, 3, dtype=dtype)


def small_network(seed=0, loss="categorical_crossentropy", dtype=np.float32):
    return Network([Dense(5, 16, seed=seed, dtype=dtype), ReLU(),
                    Dense(16, 3, seed=seed + 1, dtype=dtype), Softmax()], loss=loss)


def xor_network(seed=0):
    return Network([Dense(2, 16, seed=seed), ReLU(), Dense(16, 2, seed=seed + 1), Softmax()])


def dense_with_biases(n_in, n_out, seed, init="he"):
    """A Dense layer whose biases are not all zero, so their gradient check means something."""
    layer = Dense(n_in, n_out, seed=seed, init=init)
    layer.biases[:] = np.random.default_rng(seed + 100).standard_normal(n_out)
    return layer


class Scale(Layer):
    """A learner's own layer with a parameter: a learnable scale per feature."""

    def __init__(self, n):
        self.n = n
        self.scale = np.full(n, 2.0, np.float32)
        self.grad_scale = np.zeros_like(self.scale)

    def forward(self, x):
        self.input = x
        return x * self.scale

    def backward(self, grad_output):
        self.grad_scale[...] = (grad_output * self.input).sum(axis=0)
        return grad_output * self.scale

    def parameters(self):
        return [(self.scale, self.grad_scale)]

    def config(self):
        return {"n": self.n}


class NoReturn(Scale):
    """A learner's mistake: backward without `return`."""

    def backward(self, grad_output):
        super().backward(grad_output)


class WrongShape(Scale):
    """A learner's mistake: dL/dinput of the wrong shape."""

    def backward(self, grad_output):
        return super().backward(grad_output)[:, :1]


class OwnDense(Layer):
    """Dense written from scratch by a learner, with the same initial weights as Dense."""

    def __init__(self, n_in, n_out, seed=None):
        self.n_in, self.n_out = n_in, n_out
        self.weights = Dense(n_in, n_out, seed=seed).weights.copy()
        self.biases = np.zeros(n_out, np.float32)
        self.grad_weights = np.zeros_like(self.weights)
        self.grad_biases = np.zeros_like(self.biases)

    def forward(self, x):
        self.input = x
        return x @ self.weights + self.biases

    def backward(self, grad_output):
        self.grad_weights[...] = self.input.T @ grad_output
        self.grad_biases[...] = grad_output.sum(axis=0)
        return grad_output @ self.weights.T

    def parameters(self):
        return [(self.weights, self.grad_weights), (self.biases, self.grad_biases)]

    def config(self):
        return {"n_in": self.n_in, "n_out": self.n_out}


class RunningCentre(Layer):
    """A learner's own layer with a buffer: subtracts a running mean of its inputs, learned
    while training (no parameters)."""

    def __init__(self, n):
        self.n = n
        self.mean = np.zeros(n, np.float32)

    def forward(self, x):
        if self.training:
            self.mean += 0.5 * (x.mean(axis=0) - self.mean)
        return x - self.mean

    def backward(self, grad_output):
        return grad_output

    def buffers(self):
        return [self.mean]

    def config(self):
        return {"n": self.n}


class LossAsLayer(Layer):
    """A loss seen as a layer from predictions to one number, so check_gradients checks its
    `_prime`: forward(p) = [[loss(y, p)]], backward(g) = g * loss_prime(y, p)."""

    def __init__(self, loss, prime, y):
        self.loss, self.prime, self.y = loss, prime, y

    def forward(self, p):
        self.p = p
        return np.array([[self.loss(self.y, p)]])

    def backward(self, grad_output):
        return grad_output[0, 0] * self.prime(self.y, self.p)

    def buffers(self):                       # constant targets: not parameters, never trained
        return [self.y]


class GradientCheck(unittest.TestCase):
    """Runs nn.check_gradients, the tool learners use, and records the worst errors."""

    def assertGradientsRight(self, piece, model, x, y=None, training=False):
        errors = check_gradients(model, x, y, training=training, verbose=False)
        self.assertTrue(errors, piece)
        self.assertTrue(errors.right, f"{piece}:\n{errors}")
        for name, error in errors.items():
            key = f"{piece}: {name}"
            WORST_ERRORS[key] = max(error, WORST_ERRORS.get(key, 0.0))
            self.assertLess(error, GRADIENT_TOLERANCE, f"{key}: relative error {error:.2e}")
        return errors


# ----------------------------------------------------------------------------------------------
# Gradients, checked against finite differences
# ----------------------------------------------------------------------------------------------

class TestCheckGradients(GradientCheck):
    def test_finds_a_wrong_gradient(self):
        # Negative control: a weight gradient off by 1e-4 relative in one element must be
        # caught, and so must a classic bug, mse_prime without its factor 2.
        class SlightlyWrong(Dense):
            def backward(self, grad_output):
                grad_input = super().backward(grad_output)
                self.grad_weights[1, 0] *= 1 + 1e-4
                return grad_input

        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 3))
        errors = check_gradients(SlightlyWrong(3, 2, seed=0), x, verbose=False)
        self.assertGreater(errors["weights"], GRADIENT_TOLERANCE)
        self.assertFalse(errors.right)
        self.assertLess(errors["input"], GRADIENT_TOLERANCE)
        y = rng.standard_normal((4, 3))
        half = LossAsLayer(mse, lambda y, p: (p - y) / p.size, y)
        self.assertGreater(check_gradients(half, x, verbose=False)["input"], 0.1)

    def test_accepts_a_right_gradient_and_leaves_the_model_alone(self):
        layer = Dense(3, 2, seed=0)
        before = layer.weights.copy()
        errors = self.assertGradientsRight("Dense float32 layer", layer,
                                           np.ones((2, 3), np.float32))
        self.assertEqual(list(errors), ["input", "weights", "biases"])
        self.assertEqual(layer.weights.dtype, np.float32)
        np.testing.assert_array_equal(layer.weights, before)

    def test_prints_the_worst_error_per_array(self):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            check_gradients(Tanh(), np.ones((2, 3)))
        self.assertIn("input", output.getvalue())
        self.assertRegex(output.getvalue(), r"\d\.\de-\d+")

    # The README's input: x drawn with default_rng(0), the stream check_gradients once drew its
    # upstream gradient from, so that mix-ups of x with grad_output cancelled out.
    README_X = np.random.default_rng(0).standard_normal((4, 3))

    def assertCaught(self, model, *lines, x=README_X):
        """check_gradients on x (README_X) calls `model` wrong, printing each of `lines`."""
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            report = check_gradients(model, x)
        self.assertFalse(report.right, report)
        self.assertIn("WRONG", output.getvalue())
        for line in lines:
            self.assertIn(line, output.getvalue())
        return report

    def test_catches_the_learners_bugs_with_the_readme_x(self):
        class SquaresGrad(Scale):            # grad_scale from grad_output twice
            def backward(self, grad_output):
                self.grad_scale[...] = (grad_output * grad_output).sum(axis=0)
                return grad_output * self.scale

        class ReturnsInput(Scale):           # dL/dinput from the input
            def backward(self, grad_output):
                super().backward(grad_output)
                return self.input * self.scale

        class MasksByGradient(LeakyReLU):    # the slope read off grad_output, not the input
            def backward(self, grad_output):
                return grad_output * np.where(grad_output > 0, 1, self.slope)

        class TanhAtGradient(Tanh):          # tanh' taken at grad_output
            def backward(self, grad_output):
                return grad_output * (1 - np.tanh(grad_output) ** 2)

        class TransposedDense(OwnDense):     # dW = g.T @ x
            def backward(self, grad_output):
                grad_input = super().backward(grad_output)
                self.grad_weights[...] = grad_output.T @ self.input
                return grad_input

        for bug, wrong in ((SquaresGrad(3), "scale"), (ReturnsInput(3), "input"),
                           (MasksByGradient(), "input"), (TanhAtGradient(), "input"),
                           (TransposedDense(3, 3, seed=0), "weights")):
            report = self.assertCaught(bug)
            self.assertGreater(report[wrong], 0.1, type(bug).__name__)

    def test_catches_adding_to_a_gradient(self):
        class Accumulates(Scale):
            def backward(self, grad_output):
                self.grad_scale += (grad_output * self.input).sum(axis=0)
                return grad_output * self.scale

        report = self.assertCaught(Accumulates(3), "grad_scale is not the same when backward "
                                   "runs again", "never add to it (+=)")
        self.assertGreater(report["scale"], 0.1)
        self.assertLess(report["input"], GRADIENT_TOLERANCE)
        net = Network([Dense(3, 4, seed=0), Accumulates(4), Dense(4, 2, seed=1), Softmax()])
        report = check_gradients(net, self.README_X, one_hot([0, 1, 1, 0], 2), verbose=False)
        self.assertFalse(report.right)
        self.assertGreater(report["layer 1 Accumulates scale"], 0.1)
        self.assertLess(report["layer 2 Dense weights"], GRADIENT_TOLERANCE)

    def test_names_what_backward_returned_wrong(self):
        class Float32(Scale):
            def backward(self, grad_output):
                return super().backward(grad_output).astype(np.float32)

        class NotFinite(Scale):
            def backward(self, grad_output):
                grad_input = super().backward(grad_output) * np.nan
                self.grad_scale[...] = np.inf
                return grad_input

        class GradientRebound(Scale):
            def backward(self, grad_output):
                self.grad_scale = np.zeros((3, 1))
                return grad_output * self.scale

        report = self.assertCaught(NoReturn(3), "NoReturn(n=3).backward returned None; expected "
                                   "dL/d(input), a float64 array of shape (4, 3) (is a `return` "
                                   "missing?)")
        self.assertEqual(report["input"], np.inf)
        self.assertLess(report["scale"], GRADIENT_TOLERANCE)
        self.assertCaught(WrongShape(3), "returned an array of shape (4, 1)")
        self.assertCaught(Float32(3), "dtype float32; expected dL/d(input), a float64 array")
        report = self.assertCaught(NotFinite(3), "NotFinite(n=3): grad_scale is an array holding "
                                   "NaN or inf", "NotFinite(n=3).backward returned an array "
                                   "holding NaN or inf")
        self.assertEqual(list(report.values()), [np.inf, np.inf])     # never 0.0
        self.assertCaught(GradientRebound(3), "grad_scale is an array of shape (3, 1)")
        net = Network([Dense(3, 4, seed=0), NoReturn(4), Dense(4, 2, seed=1), Softmax()])
        report = check_gradients(net, self.README_X, one_hot([0, 1, 1, 0], 2), verbose=False)
        self.assertIn("layer 1 (NoReturn(n=4)): backward returned None", report.problems[0])

    def test_a_forward_that_returns_nothing_is_named(self):
        class ForgetsToReturn(Tanh):
            def forward(self, x):
                super().forward(x)

        report = self.assertCaught(ForgetsToReturn(), "ForgetsToReturn(): forward returned None; "
                                   "expected its output, an array (is a `return` missing?)")
        self.assertEqual(report["input"], np.inf)

    def test_a_forward_that_is_not_finite_is_wrong(self):
        class Overflows(Layer):
            def forward(self, x):
                return np.exp(x * 1e3)

            def backward(self, grad_output):
                return grad_output * 0.0

        with np.errstate(over="ignore", invalid="ignore"):
            report = self.assertCaught(Overflows(), "finite differences are NaN or inf")
        self.assertEqual(report["input"], np.inf)

    def test_right_layers_are_never_flagged_with_the_readme_x(self):
        x, images = self.README_X, np.random.default_rng(0).standard_normal((2, 2, 4, 4))
        for layer, x in ((dense_with_biases(3, 3, seed=0), x), (ReLU(), x), (Sigmoid(), x),
                         (Tanh(), x), (LeakyReLU(0.2), x), (Softmax(), x), (Scale(3), x),
                         (OwnDense(3, 3, seed=0), x), (Dropout(0.5), x), (Flatten(), images),
                         (Reshape((2, 16)), images), (Conv2D(2, 2, 3, padding=1, seed=0), images),
                         (MaxPool2D(), images)):
            self.assertGradientsRight(f"{layer!r} on the README's x", layer, x)

    def test_refuses_a_step_that_is_not_a_positive_number(self):
        for eps in (0, -1e-6, np.nan, np.inf, "1e-6", None):
            with self.assertRaisesRegex(ValueError, "check_gradients eps must be a number > 0"):
                check_gradients(Tanh(), self.README_X, eps=eps)
        for x in ([[1.0, np.nan]], [[np.inf]]):
            with self.assertRaisesRegex(ValueError, "x must hold finite numbers"):
                check_gradients(Tanh(), x)

    def test_fit_names_a_layer_whose_backward_returns_nothing_usable(self):
        X, Y = blobs(n=40)
        for layer, came in ((NoReturn(16), "None"),
                            (WrongShape(16), r"an array of shape \(32, 1\)")):
            net = Network([Dense(5, 16, seed=0), layer, Dense(16, 3, seed=1), Softmax()])
            pattern = (rf"layer 1 \({type(layer).__name__}\(n=16\)\): backward returned {came}"
                       rf".*; expected dL/d\(its input\), an array of shape \(32, 16\)")
            with self.assertRaisesRegex(ValueError, pattern):
                net.fit(X, Y, epochs=1, verbose=0)
            with self.assertRaisesRegex(ValueError, pattern.replace("32", "8")):
                net.train_on_batch(X[:8], Y[:8], SGD())

    def test_refuses_what_it_cannot_check(self):
        with self.assertRaises(ValueError):
            check_gradients("Dense", np.ones((2, 2)))
        with self.assertRaises(ValueError):
            check_gradients(small_network(), np.ones((2, 5)))          # a network needs y
        with self.assertRaisesRegex(ValueError, "x must hold real numbers, got dtype complex128"):
            check_gradients(Tanh(), self.README_X + 1j)

    def test_numbers_too_large_for_finite_differences_are_refused_not_judged(self):
        # A right Dense on x of 1e200: a step of 1e-6 is lost in rounding there.
        layer = dense_with_biases(3, 2, seed=0)
        with self.assertRaisesRegex(ValueError, "cannot trust finite differences here: the "
                                    "numbers reach 1.3e\\+200"):
            check_gradients(layer, self.README_X * 1e200, verbose=False)
        self.assertGradientsRight("Dense on x of 1e3", layer, self.README_X * 1e3)
        big = np.full(4, 1e200)
        self.assertEqual(nn.relative_error(big, big), 0.0)          # no norm overflows
        self.assertAlmostEqual(nn.relative_error(big, 2 * big), 1 / 3)
        self.assertEqual(nn.relative_error(np.zeros(3), np.ones(3)), 1.0)

    def test_an_x_that_cannot_show_a_mistake_never_passes(self):
        class MeanBiases(OwnDense):          # the biases' gradient a mean, not a sum
            def backward(self, grad_output):
                grad_input = super().backward(grad_output)
                self.grad_biases[...] = grad_output.mean(axis=0)
                return grad_input

        class ZeroInputGradient(ReLU):       # dL/d(input) forgotten: 0 everywhere
            def backward(self, grad_output):
                return np.zeros_like(grad_output)

        class FirstExample(OwnDense):        # the first example's input for the batch's
            def backward(self, grad_output):
                grad_input = super().backward(grad_output)
                self.grad_weights[...] = self.input[:1].T @ grad_output.sum(axis=0, keepdims=True)
                return grad_input

        class NoMask(ReLU):                  # a ReLU without its mask
            def backward(self, grad_output):
                return grad_output

        class TanhAsIdentity(Tanh):          # tanh' taken as 1
            def backward(self, grad_output):
                return grad_output

        # Each right at this x only: one example, or one repeated; numbers of one sign; numbers
        # near 0; an x where the gradient is 0. A look at other examples finds each.
        one = self.README_X[:1]
        for layer, x, wrong in ((MeanBiases(3, 2, seed=0), one, "biases"),
                                (FirstExample(3, 2, seed=0), np.repeat(one, 3, axis=0),
                                 "weights"),
                                (NoMask(), np.abs(self.README_X), "input"),
                                (TanhAsIdentity(), self.README_X * 1e-4, "input"),
                                (ZeroInputGradient(), -np.abs(self.README_X), "input")):
            report = self.assertCaught(layer, f"{wrong}: right at this x, but not at other "
                                       f"examples (random numbers of both signs)", x=x)
            self.assertGreater(report[wrong], 0.01, type(layer).__name__)
        y = one_hot([0, 1, 2, 0], 3, np.float64)
        crossentropy = LossAsLayer(categorical_crossentropy, categorical_crossentropy_prime, y)
        self.assertGradientsRight("crossentropy, defined for probabilities only", crossentropy,
                                  Softmax().forward(self.README_X))

    def test_an_array_that_changes_the_output_but_is_not_listed_is_named(self):
        class Shift(Scale):                  # scale and shift; beta forgotten in parameters()
            def __init__(self, n):
                super().__init__(n)
                self.beta = np.full(n, 0.5)
                self.grad_beta = np.zeros(n)

            def forward(self, x):
                return super().forward(x) + self.beta

            def backward(self, grad_output):
                self.grad_beta[...] = grad_output.sum(axis=0)
                return super().backward(grad_output)

        class Listed(Shift):                 # beta as a constant, in buffers()
            def buffers(self):
                return [self.beta]

        self.assertCaught(Shift(3), "Shift(n=3): beta changes the output but is not in "
                          "parameters(): it will never train (or, if it must not, list it in "
                          "buffers())")
        self.assertGradientsRight("a listed constant", Listed(3), self.README_X)
        net = Network([Dense(3, 3, seed=0), Shift(3), Dense(3, 2, seed=1), Softmax()])
        report = check_gradients(net, self.README_X, one_hot([0, 1, 1, 0], 2), verbose=False)
        self.assertEqual(report.problems, ["layer 1 (Shift(n=3)): beta changes the output but "
                                           "is not in parameters(): it will never train (or, "
                                           "if it must not, list it in buffers())"])


class TestLayerGradients(GradientCheck):
    def test_dense(self):
        rng = np.random.default_rng(0)
        for batch, n_in, n_out in ((1, 3, 2), (5, 4, 3), (7, 6, 10)):
            self.assertGradientsRight("Dense", dense_with_biases(n_in, n_out, seed=batch),
                                      rng.standard_normal((batch, n_in)))

    def test_elementwise_activations(self):
        rng = np.random.default_rng(1)
        x = 3 * rng.standard_normal((6, 5))
        x[np.abs(x) < 0.1] = 0.5            # away from the kinks at 0, where no derivative exists
        for layer in (ReLU(), Sigmoid(), Tanh(), LeakyReLU(), LeakyReLU(0.3)):
            self.assertGradientsRight(repr(layer), layer, x)

    def test_softmax(self):
        rng = np.random.default_rng(3)
        self.assertGradientsRight("Softmax", Softmax(), 3 * rng.standard_normal((6, 5)))

    def test_dropout_with_a_fixed_mask(self):
        rng = np.random.default_rng(4)
        self.assertGradientsRight("Dropout", Dropout(0.4, seed=1), rng.standard_normal((6, 5)),
                                  training=True)

    def test_softmax_matches_explicit_jacobian(self):
        rng = np.random.default_rng(4)
        z = rng.standard_normal((5, 4))
        upstream = rng.standard_normal((5, 4))
        softmax = Softmax()
        p = softmax.forward(z)
        for row in range(len(z)):
            jacobian = np.diag(p[row]) - np.outer(p[row], p[row])   # dp[i]/dz[j]
            expected = jacobian.T @ upstream[row]
            np.testing.assert_allclose(softmax.backward(upstream)[row], expected, rtol=1e-12,
                                       atol=1e-15)

    def test_a_learners_own_layer(self):
        x = np.random.default_rng(5).standard_normal((4, 3))
        self.assertGradientsRight("Scale (a learner's layer)", Scale(3), x)


class TestLossGradients(GradientCheck):
    def setUp(self):
        rng = np.random.default_rng(5)
        self.y_true = one_hot(rng.integers(0, 4, size=6), 4, dtype=np.float64)
        self.y_pred = Softmax().forward(rng.standard_normal((6, 4)))

    def test_primes(self):
        for loss, prime in ((mse, mse_prime),
                            (categorical_crossentropy, categorical_crossentropy_prime),
                            (binary_crossentropy, binary_crossentropy_prime)):
            self.assertGradientsRight(f"{prime.__name__}", LossAsLayer(loss, prime, self.y_true),
                                      self.y_pred)

    def test_loss_values(self):
        y_true = np.array([[0.0, 1.0], [1.0, 0.0]])
        y_pred = np.array([[0.2, 0.8], [0.6, 0.4]])
        self.assertAlmostEqual(mse(y_true, y_pred), (0.04 * 2 + 0.16 * 2) / 4)
        self.assertAlmostEqual(categorical_crossentropy(y_true, y_pred),
                               -(np.log(0.8) + np.log(0.6)) / 2)
        self.assertAlmostEqual(binary_crossentropy(np.array([[1.0], [0.0]]),
                                                   np.array([[0.8], [0.4]])),
                               -(np.log(0.8) + np.log(0.6)) / 2)


class TestFusedGradients(GradientCheck):
    """A cross-entropy with its final activation: one exact gradient at that activation's input."""

    def test_against_finite_differences(self):
        rng = np.random.default_rng(6)
        net = Network([dense_with_biases(3, 5, seed=6), Softmax()])
        self.assertIs(net.fused_prime, nn.softmax_crossentropy_prime)
        self.assertGradientsRight("softmax + crossentropy", net, rng.standard_normal((4, 3)),
                                  one_hot([2, 0, 4, 4], 5))
        net = Network([dense_with_biases(3, 1, seed=7), Sigmoid()], loss="binary_crossentropy")
        self.assertIs(net.fused_prime, nn.sigmoid_binary_crossentropy_prime)
        self.assertGradientsRight("sigmoid + binary crossentropy", net,
                                  rng.standard_normal((5, 3)), [[0], [1], [1], [0], [1]])

    def test_fused_equals_the_general_chain_rule(self):
        rng = np.random.default_rng(7)
        z = 2 * rng.standard_normal((8, 6))
        y = one_hot(rng.integers(0, 6, size=8), 6, dtype=np.float64)
        softmax = Softmax()
        p = softmax.forward(z)
        general = softmax.backward(categorical_crossentropy_prime(y, p))
        np.testing.assert_allclose(general, nn.softmax_crossentropy_prime(y, p), rtol=1e-10,
                                   atol=1e-15)
        y = rng.integers(0, 2, size=(8, 6)).astype(np.float64)
        sigmoid = Sigmoid()
        p = sigmoid.forward(z)
        general = sigmoid.backward(binary_crossentropy_prime(y, p))
        np.testing.assert_allclose(general, nn.sigmoid_binary_crossentropy_prime(y, p),
                                   rtol=1e-10, atol=1e-15)

    def test_confidently_wrong_prediction_keeps_exact_gradient(self):
        # Logits of +-1e4 give probabilities of exactly 0 for the true class. The gradient at
        # the logits must still be (p - y) / N: -1/N for the true class, +1/N for the guess.
        for dtype in (np.float32, np.float64):
            dense = Dense(2, 3, dtype=dtype)
            dense.weights[:] = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
            dense.biases[:] = 0
            dense.input_gradient_needed = False
            net = Network([dense, Softmax()])
            x = np.array([[1.0, 0.0]], dtype=dtype)
            y = one_hot([1], 3, dtype=dtype)                        # the truth gets p = 0
            with np.errstate(all="raise"), warnings.catch_warnings():
                warnings.simplefilter("error")
                p = net.forward(x)
                net.backward(y, p)
                loss = net.loss(y, p)
            self.assertEqual(p[0, 1], 0.0)
            np.testing.assert_array_equal(dense.grad_biases, [1.0, -1.0, 0.0])
            self.assertTrue(np.isfinite(loss) and loss > 80, loss)


class TestNetworkGradients(GradientCheck):
    def test_networks(self):
        rng = np.random.default_rng(8)
        x = rng.standard_normal((7, 4))
        y = one_hot(rng.integers(0, 3, size=7), 3)
        cases = {
            "ReLU net, crossentropy": Network([
                dense_with_biases(4, 6, 1), ReLU(), dense_with_biases(6, 5, 2), ReLU(),
                dense_with_biases(5, 3, 3), Softmax()]),
            "sigmoid net, softmax, mse": Network([
                dense_with_biases(4, 6, 4, "glorot"), Sigmoid(),
                dense_with_biases(6, 3, 5, "glorot"), Softmax()], loss="mse"),
            "tanh and leaky ReLU net": Network([
                dense_with_biases(4, 6, 6, "glorot"), Tanh(), dense_with_biases(6, 5, 7),
                LeakyReLU(0.1), dense_with_biases(5, 3, 8), Softmax()]),
            "a learner's Scale inside": Network([
                dense_with_biases(4, 5, 9), ReLU(), Scale(5), dense_with_biases(5, 3, 10),
                Softmax()]),
        }
        for name, net in cases.items():
            self.assertGradientsRight(name, net, x, y)
        regression = Network([dense_with_biases(4, 4, 11), ReLU(), dense_with_biases(4, 2, 12)],
                             loss="mse")
        self.assertGradientsRight("linear output, mse", regression, x, rng.random((7, 2)))

    def test_dropout_network_in_training_mode(self):
        rng = np.random.default_rng(9)
        net = Network([dense_with_biases(4, 6, 1), ReLU(), Dropout(0.5, seed=3),
                       dense_with_biases(6, 3, 2), Softmax()])
        self.assertGradientsRight("network with Dropout", net, rng.standard_normal((5, 4)),
                                  one_hot([0, 1, 2, 1, 0], 3), training=True)


class TestExtremeInputs(unittest.TestCase):
    """No overflow, invalid-value or underflow trouble, NaN or inf on extreme inputs."""

    def run_strictly(self, function):
        with np.errstate(all="raise"), warnings.catch_warnings():
            warnings.simplefilter("error")
            return function()

    def test_sigmoid_and_tanh(self):
        for dtype in (np.float32, np.float64):
            x = np.array([[-1e4, -100.0, -95.0, -30.0, 0.0, 30.0, 95.0, 1e4]], dtype=dtype)
            for layer, low, middle in ((Sigmoid(), 0.0, 0.5), (Tanh(), -1.0, 0.0)):
                out = self.run_strictly(lambda: layer.forward(x))
                grad = self.run_strictly(lambda: layer.backward(np.full_like(x, 0.3)))
                self.assertTrue(np.all(np.isfinite(out)) and np.all(np.isfinite(grad)))
                self.assertEqual((out[0, 0], out[0, 4], out[0, -1]), (low, middle, 1.0))
                self.assertEqual(out.dtype, dtype)

    def test_softmax(self):
        for dtype in (np.float32, np.float64):
            z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [0.0, -95.0, -104.0],
                          [1e4, 1e4, -1e4]], dtype=dtype)
            softmax = Softmax()
            p = self.run_strictly(lambda: softmax.forward(z))
            grad = self.run_strictly(lambda: softmax.backward(np.ones_like(z) * 0.7))
            self.assertTrue(np.all(np.isfinite(p)) and np.all(np.isfinite(grad)))
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
            np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
            np.testing.assert_allclose(p[1], 1 / 3, rtol=1e-6)
            self.assertEqual(p.dtype, dtype)

    def test_losses_on_probabilities_of_exactly_0_and_1(self):
        for dtype in (np.float32, np.float64):
            y_true = np.array([[0, 1, 0], [1, 0, 0]], dtype=dtype)
            y_pred = np.array([[1, 0, 0], [1, 0, 0]], dtype=dtype)     # one right, one wrong
            for function in (categorical_crossentropy, categorical_crossentropy_prime, mse,
                             mse_prime, binary_crossentropy, binary_crossentropy_prime,
                             nn.sigmoid_binary_crossentropy_prime):
                value = self.run_strictly(lambda: function(y_true, y_pred))
                self.assertTrue(np.all(np.isfinite(value)), function.__name__)
            self.assertGreater(categorical_crossentropy(y_true, y_pred), 30)
            self.assertGreater(binary_crossentropy(y_true, y_pred), 20)
            self.assertEqual(categorical_crossentropy(y_true, y_true), 0.0)
            self.assertEqual(binary_crossentropy(y_true, y_true), 0.0)

    def test_whole_network_on_extreme_inputs(self):
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(11)
            for hidden in (ReLU(), Sigmoid(), Tanh(), LeakyReLU()):
                net = Network([Dense(4, 8, seed=1, dtype=dtype), hidden,
                               Dense(8, 3, seed=2, dtype=dtype), Softmax()])
                x = (rng.standard_normal((6, 4)) * 1e4).astype(dtype)
                y = one_hot(rng.integers(0, 3, size=6), 3, dtype=dtype)
                p = self.run_strictly(lambda: net.forward(x))
                self.run_strictly(lambda: net.backward(y, p))
                self.assertTrue(np.all(np.isfinite(p)))
                for _, grad in net.parameters():
                    self.assertTrue(np.all(np.isfinite(grad)))


# ----------------------------------------------------------------------------------------------
# Layers' behaviour
# ----------------------------------------------------------------------------------------------

class TestActivationValues(unittest.TestCase):
    def test_relu_and_leaky_relu(self):
        x = np.array([[-2.0, -0.01, 0.0, 0.01, 3.0]])
        relu, leaky = ReLU(), LeakyReLU(0.1)
        np.testing.assert_array_equal(relu.forward(x), [[0, 0, 0, 0.01, 3.0]])
        np.testing.assert_array_equal(relu.backward(np.full_like(x, 5.0)), [[0, 0, 0, 5.0, 5.0]])
        np.testing.assert_allclose(leaky.forward(x), [[-0.2, -0.001, 0, 0.01, 3.0]])
        np.testing.assert_allclose(leaky.backward(np.full_like(x, 5.0)), [[0.5, 0.5, 0.5, 5, 5]])
        self.assertEqual(leaky.forward(x.astype(np.float32)).dtype, np.float32)

    def test_tanh(self):
        x = np.array([[-1.0, 0.0, 2.0]])
        np.testing.assert_allclose(Tanh().forward(x), np.tanh(x))


class TestDropout(unittest.TestCase):
    def test_identity_at_inference(self):
        x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
        dropout = Dropout(0.5, seed=0)
        self.assertIs(dropout.forward(x), x)
        self.assertIs(dropout.backward(x), x)

    def test_keeps_the_expected_activation(self):
        dropout = Dropout(0.3, seed=0)
        dropout.training = True
        out = dropout.forward(np.ones((1000, 100), np.float32))
        self.assertEqual(out.dtype, np.float32)
        self.assertAlmostEqual(float(np.mean(out == 0)), 0.3, delta=0.01)
        self.assertAlmostEqual(float(out.mean()), 1.0, delta=0.01)
        np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)

    def test_network_drops_only_while_training(self):
        X, Y = blobs()
        net = Network([Dense(5, 16, seed=0), ReLU(), Dropout(0.5), Dense(16, 3, seed=1),
                       Softmax()])
        np.testing.assert_array_equal(net.predict(X), net.predict(X))
        modes = []
        original = Dropout.forward
        with mock.patch.object(Dropout, "forward",
                               lambda layer, x: modes.append(layer.training) or original(layer, x)):
            net.fit(X, Y, epochs=1, batch_size=100, verbose=0)
            net.evaluate(X, Y)
        self.assertEqual(modes[-1], False)
        self.assertEqual(modes.count(True), 3)

    def test_reproducible_with_the_fit_seed(self):
        X, Y = blobs()
        results = []
        for seed in (0, 0, 1):
            net = Network([Dense(5, 16, seed=0), ReLU(), Dropout(0.5), Dense(16, 3, seed=1),
                           Softmax()])
            net.fit(X, Y, epochs=2, seed=seed, verbose=0)
            results.append(net.predict(X))
        np.testing.assert_array_equal(results[0], results[1])
        self.assertFalse(np.array_equal(results[0], results[2]))


# ----------------------------------------------------------------------------------------------
# Convolutional layers
# ----------------------------------------------------------------------------------------------

def images(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def conv_by_loops(x, weights, biases, stride, padding):
    """The definition of a convolution (cross-correlation), one output number at a time."""
    batch, _, height, width = x.shape
    out_c, in_c, k, _ = weights.shape
    padded = np.zeros((batch, in_c, height + 2 * padding, width + 2 * padding))
    padded[:, :, padding:padding + height, padding:padding + width] = x
    out_h = (height + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    out = np.zeros((batch, out_c, out_h, out_w))
    for n, o, y, x_ in np.ndindex(batch, out_c, out_h, out_w):
        window = padded[n, :, y * stride:y * stride + k, x_ * stride:x_ * stride + k]
        out[n, o, y, x_] = biases[o] + sum(weights[o, c, i, j] * window[c, i, j]
                                           for c, i, j in np.ndindex(in_c, k, k))
    return out


class TestConv2D(GradientCheck):
    CASES = [  # (in, out, k, stride, padding, input shape)
        (1, 2, 3, 1, 0, (2, 1, 5, 4)),
        (3, 2, 3, 1, 1, (2, 3, 5, 6)),
        (2, 3, 3, 2, 1, (2, 2, 7, 5)),
        (2, 2, 2, 2, 0, (1, 2, 4, 6)),
        (3, 2, 1, 1, 0, (2, 3, 3, 2)),
        (2, 2, 3, 2, 0, (2, 2, 6, 6)),     # stride 2 leaves the last row and column unused
    ]

    def test_col2im_is_im2col_run_backwards(self):
        # col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)> for any x and c,
        # which is what makes it dL/d(input) given dL/d(columns).
        rng = np.random.default_rng(3)
        for _, _, k, s, p, shape in self.CASES:
            x = rng.standard_normal(shape)
            columns = nn.im2col(x, k, s, p)
            c = rng.standard_normal(columns.shape)
            back = nn.col2im(c, shape, k, s, p)
            self.assertEqual(back.shape, shape)
            self.assertAlmostEqual(float(np.sum(columns * c)), float(np.sum(x * back)), places=9)

    def test_forward_matches_the_loop_definition(self):
        for c_in, c_out, k, s, p, shape in self.CASES:
            layer = Conv2D(c_in, c_out, k, stride=s, padding=p, seed=1, dtype=np.float64)
            layer.biases[:] = np.arange(c_out) * 0.1
            x = images(*shape)
            expected = conv_by_loops(x, layer.weights, layer.biases, s, p)
            np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)

    def test_float32_forward_is_close(self):
        layer = Conv2D(2, 3, 3, padding=1, seed=2)
        x = images(2, 2, 5, 5).astype(np.float32)
        out = layer.forward(x)
        self.assertEqual(out.dtype, np.float32)
        expected = conv_by_loops(x.astype(np.float64), layer.weights.astype(np.float64),
                                 layer.biases, 1, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    def test_gradients(self):
        for c_in, c_out, k, s, p, shape in self.CASES:
            layer = Conv2D(c_in, c_out, k, stride=s, padding=p, seed=3, dtype=np.float64)
            layer.biases[:] = images(c_out, seed=4)
            with self.subTest(layer=repr(layer), shape=shape):
                self.assertGradientsRight("Conv2D", layer, images(*shape, seed=5))

    def test_gradients_overwrite_rather_than_accumulate(self):
        layer = Conv2D(2, 2, 3, padding=1, seed=0, dtype=np.float64)
        x, g = images(2, 2, 4, 4), images(2, 2, 4, 4, seed=1)
        layer.forward(x)
        layer.backward(g)
        first = [grad.copy() for _, grad in layer.parameters()]
        layer.forward(x)
        layer.backward(g)
        for before, (_, after) in zip(first, layer.parameters()):
            np.testing.assert_array_equal(before, after)

    def test_he_initialisation_shapes_config_and_repr(self):
        layer = Conv2D(16, 32, 3, seed=0)
        self.assertEqual(layer.weights.shape, (32, 16, 3, 3))
        self.assertEqual(layer.biases.shape, (32,))
        self.assertEqual(layer.weights.dtype, np.float32)
        self.assertAlmostEqual(float(layer.weights.std()), np.sqrt(2 / (16 * 9)), delta=0.01)
        self.assertEqual(repr(Conv2D(1, 8, 3, padding=1)), "Conv2D(1, 8, 3, padding=1)")
        self.assertEqual(repr(Conv2D(2, 4, 5, stride=2)), "Conv2D(2, 4, 5, stride=2)")
        self.assertEqual(repr(Conv2D(**layer.config())), repr(layer))

    def test_refusals(self):
        layer = Conv2D(2, 4, 5, padding=1)
        for shape, words in [((2, 3, 8, 8), "(batch, 2, height, width)"),
                             ((2, 8, 8), "(batch, 2, height, width)"),
                             ((2, 2, 2, 8), "larger than the input padded")]:
            with self.assertRaises(ValueError) as caught:
                layer.forward(np.zeros(shape, np.float32))
            for fragment in ("Conv2D(2, 4, 5, padding=1)", words, str(shape)):
                self.assertIn(fragment, str(caught.exception))
        for arguments in [(0, 4, 3), (2, 4, 0), (2, 4, 3, 0), (2, 4, 3, 1, -1), (2.0, 4, 3),
                          (2, True, 3)]:
            with self.assertRaises(ValueError):
                Conv2D(*arguments)


class TestMaxPool2D(GradientCheck):
    def test_forward(self):
        x = np.random.default_rng(0).permutation(np.arange(144.0)).reshape(2, 3, 4, 6)
        for n in (1, 2):
            expected = x.reshape(2, 3, 4 // n, n, 6 // n, n).max(axis=(3, 5))
            np.testing.assert_array_equal(MaxPool2D(n).forward(x), expected)
        np.testing.assert_array_equal(MaxPool2D(3).forward(x[:, :, :3, :]),
                                      x[:, :, :3, :].reshape(2, 3, 1, 3, 2, 3).max(axis=(3, 5)))

    def test_gradients(self):
        for size, shape in [(2, (2, 3, 4, 6)), (3, (1, 2, 3, 6)), (1, (1, 2, 2, 3))]:
            self.assertGradientsRight(f"MaxPool2D({size})", MaxPool2D(size), images(*shape))
        # what Conv2D hands on: a (batch, c, h, w) view of memory laid out otherwise
        x = images(2, 4, 6, 3).transpose(0, 3, 1, 2)
        pool = MaxPool2D()
        np.testing.assert_array_equal(pool.forward(x), pool.forward(np.ascontiguousarray(x)))
        self.assertGradientsRight("MaxPool2D on a transposed view", pool, x)

    def test_ties_send_the_gradient_to_the_first_maximum_only(self):
        x = np.array([[[[1., 1.], [1., 0.]], [[0., 0.], [0., 0.]]]])   # (1, 2, 2, 2)
        pool = MaxPool2D()
        pool.forward(x)
        grad = pool.backward(np.array([[[[5.]], [[7.]]]]))
        np.testing.assert_array_equal(grad, [[[[5., 0.], [0., 0.]], [[7., 0.], [0., 0.]]]])

    def test_refusals(self):
        for shape in [(2, 3, 5, 4), (2, 3, 4, 5), (2, 4, 4)]:
            with self.assertRaises(ValueError) as caught:
                MaxPool2D().forward(np.zeros(shape))
            self.assertIn("MaxPool2D()", str(caught.exception))
            self.assertIn(str(shape), str(caught.exception))
        for size in (0, 2.5, True):
            with self.assertRaises(ValueError):
                MaxPool2D(size)


class TestFlattenReshape(GradientCheck):
    def test_flatten_in_pytorch_order(self):
        x = images(2, 3, 4, 5)
        np.testing.assert_array_equal(Flatten().forward(x), x.reshape(2, 60))
        channels_last = x.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(Flatten().forward(channels_last), x.reshape(2, 60))
        self.assertGradientsRight("Flatten", Flatten(), x)
        with self.assertRaises(ValueError) as caught:
            Flatten().forward(np.zeros(4))
        self.assertIn("Flatten()", str(caught.exception))

    def test_reshape(self):
        layer = Reshape((1, 28, 28))
        self.assertEqual(layer.forward(images(3, 784)).shape, (3, 1, 28, 28))
        self.assertEqual(repr(layer), "Reshape((1, 28, 28))")
        self.assertEqual(repr(Reshape(**layer.config())), repr(layer))
        self.assertGradientsRight("Reshape", Reshape((2, 3)), images(2, 6))
        with self.assertRaises(ValueError) as caught:
            layer.forward(images(3, 785))
        self.assertIn("Reshape((1, 28, 28))", str(caught.exception))
        self.assertIn("(3, 785)", str(caught.exception))
        for shape in [(), (0, 3), "28", (2.0,), None]:
            with self.assertRaises(ValueError):
                Reshape(shape)


class TestCNN(GradientCheck):
    def tiny_cnn(self):
        return Network([Reshape((1, 8, 8)), Conv2D(1, 3, 3, padding=1, seed=0), ReLU(),
                        MaxPool2D(), Conv2D(3, 4, 3, stride=2, padding=1, seed=1), ReLU(),
                        Flatten(), Dense(4 * 2 * 2, 2, seed=2), Softmax()])

    def test_whole_cnn_gradients(self):
        self.assertGradientsRight("a small CNN", self.tiny_cnn(), images(3, 64),
                                  one_hot([0, 1, 1], 2))

    def test_trains_saves_and_loads(self):
        net = self.tiny_cnn()
        self.assertFalse(net.layers[1].input_gradient_needed)
        X = images(40, 64).astype(np.float32)
        Y = one_hot((X[:, :32].sum(1) > X[:, 32:].sum(1)).astype(int), 2)
        history = net.fit(X, Y, epochs=20, batch_size=8, optimizer=Adam(lr=0.01), seed=0,
                          verbose=0)
        self.assertLess(history["loss"][-1], history["loss"][0] / 2)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "cnn.npz")
            net.save(path)
            loaded = Network.load(path)
        np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
        self.assertEqual(repr(loaded.layers[4]), "Conv2D(3, 4, 3, stride=2, padding=1)")


def batchnorm_by_loops(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                       eps=1e-5):
    """BatchNorm by its definition, one feature (channel) and one number at a time: returns
    (output, new running mean, new running variance)."""
    out = np.zeros_like(x)
    new_mean, new_var = running_mean.copy(), running_var.copy()
    for c in range(x.shape[1]):
        values = [x[(n, c) + rest] for n in range(len(x)) for rest in np.ndindex(x.shape[2:])]
        m = len(values)
        mean = sum(values) / m
        var = sum((v - mean) ** 2 for v in values) / m
        if training:
            new_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
            new_var[c] = (1 - momentum) * running_var[c] + momentum * var * m / (m - 1)
        else:
            mean, var = running_mean[c], running_var[c]
        for n in range(len(x)):
            for rest in np.ndindex(x.shape[2:]):
                index = (n, c) + rest
                out[index] = gamma[c] * (x[index] - mean) / np.sqrt(var + eps) + beta[c]
    return out, new_mean, new_var


def batchnorm_with_values(n, seed=0, dtype=np.float64, **options):
    """A BatchNorm whose gamma, beta and running statistics are not their starting values."""
    layer = BatchNorm(n, dtype=dtype, **options)
    rng = np.random.default_rng(seed + 50)
    layer.gamma[:] = rng.uniform(0.5, 2, n)
    layer.beta[:] = rng.standard_normal(n)
    layer.running_mean[:] = rng.standard_normal(n)
    layer.running_var[:] = rng.uniform(0.5, 2, n)
    return layer


class TestBatchNorm(GradientCheck):
    SHAPES = [(6, 3), (3, 2, 4, 5)]          # (batch, features) and (batch, channels, h, w)

    def test_matches_the_loop_definition_in_training_and_inference(self):
        for shape in self.SHAPES:
            for training in (True, False):
                with self.subTest(shape=shape, training=training):
                    layer = batchnorm_with_values(shape[1], momentum=0.3)
                    x = images(*shape) * 3 + 1
                    expected = batchnorm_by_loops(x, layer.gamma, layer.beta, layer.running_mean,
                                                  layer.running_var, training, momentum=0.3)
                    layer.training = training
                    np.testing.assert_allclose(layer.forward(x), expected[0], rtol=1e-10,
                                               atol=1e-12)
                    np.testing.assert_allclose(layer.running_mean, expected[1], rtol=1e-12)
                    np.testing.assert_allclose(layer.running_var, expected[2], rtol=1e-12)

    def test_training_output_has_zero_mean_and_unit_variance_per_feature(self):
        layer = BatchNorm(3)
        layer.training = True
        x = (images(8, 3, 4, 4) * 5 + 2).astype(np.float32)
        out = layer.forward(x)
        self.assertEqual(out.dtype, np.float32)
        np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
        np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)

    def test_gradients_in_training_and_inference(self):
        for shape in self.SHAPES:
            for training in (True, False):
                with self.subTest(shape=shape, training=training):
                    self.assertGradientsRight("BatchNorm", batchnorm_with_values(shape[1]),
                                              images(*shape, seed=1) * 2 + 1, training=training)

    def test_network_gradients_in_training_mode(self):
        # (Not straight after a layer with biases: normalising cancels them, their gradient
        # is 0, and 0 against rounding noise is no check.)
        net = Network([Reshape((1, 6, 6)), Conv2D(1, 2, 3, seed=0), ReLU(), BatchNorm(2),
                       Flatten(), Dense(32, 4, seed=1), Tanh(), BatchNorm(4),
                       Dense(4, 2, seed=2), Softmax()])
        self.assertGradientsRight("network with BatchNorm", net, images(4, 36),
                                  one_hot([0, 1, 1, 0], 2), training=True)

    def test_parameters_buffers_config_and_repr(self):
        layer = BatchNorm(4)
        (gamma, _), (beta, _) = layer.parameters()
        np.testing.assert_array_equal(gamma, np.ones(4))
        np.testing.assert_array_equal(beta, np.zeros(4))
        mean, var = layer.buffers()
        self.assertIs(mean, layer.running_mean)
        self.assertIs(var, layer.running_var)
        self.assertEqual(repr(layer), "BatchNorm(4)")
        self.assertEqual(repr(BatchNorm(4, momentum=0.01)), "BatchNorm(4, momentum=0.01)")

    def test_refusals(self):
        for make, fragment in ((lambda: BatchNorm(0), "BatchNorm n"),
                               (lambda: BatchNorm(10**9), "MAX_STORED_VALUES"),
                               (lambda: BatchNorm(3, momentum=1.5), "momentum"),
                               (lambda: BatchNorm(3, eps=0), "eps")):
            with self.assertRaises(ValueError) as caught:
                make()
            self.assertIn(fragment, str(caught.exception))
        layer = BatchNorm(3)
        for x in (np.zeros((2, 4)), np.zeros((2, 3, 4)), np.zeros((2, 4, 5, 5))):
            with self.assertRaises(ValueError) as caught:
                layer.forward(x)
            self.assertIn("BatchNorm(3) expects input of shape", str(caught.exception))
        layer.training = True
        with self.assertRaises(ValueError) as caught:
            layer.forward(np.zeros((1, 3)))
        self.assertIn("more than one number per feature", str(caught.exception))

    def test_trains_evaluates_with_running_statistics_and_round_trips(self):
        X, Y = blobs(n=120)
        X = X * 10 + 50                                  # far from centred: BatchNorm's job
        net = Network([BatchNorm(5), Dense(5, 8, seed=0), BatchNorm(8), ReLU(),
                       Dense(8, 3, seed=1), Softmax()])
        history = net.fit(X, Y, epochs=5, batch_size=16, optimizer=Adam(lr=0.01), seed=0,
                          verbose=0)
        self.assertGreater(history["accuracy"][-1], 0.9)
        np.testing.assert_allclose(net.layers[0].running_mean, X.mean(axis=0), rtol=0.05)
        # Inference uses the running statistics: one example alone gets its batch's answer.
        np.testing.assert_allclose(net.predict(X[:1]), net.predict(X)[:1], rtol=1e-6)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "bn.npz")
            net.save(path)
            with np.load(path) as stored:
                np.testing.assert_array_equal(stored["layer0_buffer0"], net.layers[0].running_mean)
            loaded = Network.load(path)
        for layer, again in zip(net.layers, loaded.layers):
            for array, loaded_array in zip(layer.buffers(), again.buffers()):
                np.testing.assert_array_equal(loaded_array, array)
        np.testing.assert_array_equal(loaded.predict(X), net.predict(X))

    def test_a_float64_network_casts_the_running_statistics(self):
        X, Y = blobs(n=40, dtype=np.float64)
        net = Network([Dense(5, 4, seed=0, dtype=np.float64), BatchNorm(4), ReLU(),
                       Dense(4, 3, seed=1, dtype=np.float64), Softmax()])
        net.fit(X, Y, epochs=1, batch_size=10, verbose=0)
        self.assertEqual(net.layers[1].running_mean.dtype, np.float64)
        self.assertEqual(net.layers[1].running_var.dtype, np.float64)


class TestRandomShift(GradientCheck):
    def shift(self, pixels=2, seed=0):
        layer = RandomShift(pixels, seed=seed)
        layer.training = True
        return layer

    def test_matches_the_definition(self):
        for pixels, shape in ((2, (20, 2, 6, 7)), (1, (9, 5, 4)), (3, (4, 1, 2, 3))):
            layer, x = self.shift(pixels), images(*shape)
            out = layer.forward(x)
            self.assertEqual(layer.shifts.shape, (shape[0], 2))
            self.assertTrue(np.all(np.abs(layer.shifts) <= pixels))
            expected = np.zeros_like(x)
            height, width = shape[-2:]
            for n, (down, right) in enumerate(layer.shifts):
                for y in range(height):
                    for x_ in range(width):
                        if 0 <= y - down < height and 0 <= x_ - right < width:
                            expected[n, ..., y, x_] = x[n, ..., y - down, x_ - right]
            np.testing.assert_array_equal(out, expected)
        self.assertGreater(len(np.unique(layer.shifts, axis=0)), 1)        # not all alike

    def test_each_example_stays_itself_so_its_label_stays_right(self):
        x = np.zeros((30, 1, 9, 9), np.float32)
        x[:, :, 3:6, 3:6] = np.arange(1, 31)[:, None, None, None]     # image n is all n + 1
        out = self.shift(2).forward(x)
        self.assertEqual(out.dtype, np.float32)
        for n in range(30):
            self.assertEqual(set(np.unique(out[n])), {0, n + 1})
            self.assertEqual(out[n].sum(), x[n].sum())          # moved whole, nothing lost

    def test_reproducible_from_its_seed_and_from_fits(self):
        x = images(10, 1, 5, 5)
        np.testing.assert_array_equal(self.shift(seed=4).forward(x), self.shift(seed=4).forward(x))
        self.assertFalse(np.array_equal(self.shift(seed=4).forward(x),
                                        self.shift(seed=5).forward(x)))
        X, Y = blobs(n=60)
        X = np.repeat(X, 5, axis=1).reshape(60, 1, 5, 5)

        def fitted(seed):
            net = Network([RandomShift(1), Flatten(), Dense(25, 3, seed=0), Softmax()])
            net.fit(X, Y, epochs=2, batch_size=10, seed=seed, verbose=0)
            return net.layers[2].weights

        np.testing.assert_array_equal(fitted(0), fitted(0))
        self.assertFalse(np.array_equal(fitted(0), fitted(1)))

    def test_never_applied_in_predict_evaluate_or_validation(self):
        X, Y = blobs(n=60)
        X = np.repeat(X, 5, axis=1).reshape(60, 1, 5, 5)
        net = Network([RandomShift(2, seed=0), Flatten(), Dense(25, 3, seed=0), Softmax()])
        history = net.fit(X, Y, epochs=2, batch_size=10, validation_data=(X, Y), verbose=0)
        self.assertEqual(net.evaluate(X, Y)[0], history["val_loss"][-1])
        unshifted = Network(net.layers[1:])
        np.testing.assert_array_equal(net.predict(X), unshifted.predict(X))
        self.assertEqual(net.evaluate(X, Y), unshifted.evaluate(X, Y))

    def test_gradients(self):
        self.assertGradientsRight("RandomShift", RandomShift(1, seed=0), images(4, 2, 3, 5),
                                  training=True)
        net = Network([Reshape((1, 4, 4)), RandomShift(1), Conv2D(1, 2, 3, seed=0), ReLU(),
                       Flatten(), Dense(8, 2, seed=1), Softmax()])
        self.assertGradientsRight("network with RandomShift", net, images(3, 16),
                                  one_hot([0, 1, 1], 2), training=True)

    def test_shift_moves_each_image_by_its_own_offset(self):
        x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4) + 1
        moved = nn.shift(x, np.array([[1, 0], [0, -2]]), 2)
        np.testing.assert_array_equal(moved[0, 0], np.vstack([np.zeros(4), x[0, 0, :2]]))
        np.testing.assert_array_equal(moved[1, 0], np.hstack([x[1, 0, :, 2:], np.zeros((3, 2))]))

    def test_config_and_refusals(self):
        self.assertEqual(repr(RandomShift(3)), "RandomShift(pixels=3)")
        for make in (lambda: RandomShift(-1), lambda: RandomShift(1.5), lambda: RandomShift(65)):
            with self.assertRaises(ValueError) as caught:
                make()
            self.assertIn("RandomShift pixels", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            RandomShift(2).forward(np.zeros((4, 784)))
        self.assertIn("expects images", str(caught.exception))


# ----------------------------------------------------------------------------------------------
# The network: training, the Layer protocol, honest metrics
# ----------------------------------------------------------------------------------------------

class TestTraining(unittest.TestCase):
    def test_learns_xor(self):
        net = xor_network()
        net.fit(XOR_X, XOR_Y, epochs=300, batch_size=4, optimizer=SGD(lr=0.1, momentum=0.9),
                seed=0, verbose=0)
        np.testing.assert_array_equal(net.predict(XOR_X).argmax(axis=1), [0, 1, 1, 0])
        self.assertEqual(net.evaluate(XOR_X, XOR_Y)[1], 1.0)

    def test_loss_falls(self):
        X, Y = blobs()
        for loss, lr in (("categorical_crossentropy", 0.05), ("mse", 0.5)):
            net = small_network(loss=loss)
            before, _ = net.evaluate(X, Y)
            history = net.fit(X, Y, epochs=5, batch_size=16, optimizer=SGD(lr=lr, momentum=0.9),
                              seed=0, verbose=0)
            after, accuracy = net.evaluate(X, Y)
            self.assertLess(after, before / 2, loss)
            self.assertLess(history["loss"][-1], history["loss"][0], loss)
            self.assertGreater(accuracy, 0.9, loss)

    def test_history_has_one_value_per_epoch(self):
        X, Y = blobs()
        history = small_network().fit(X[:200], Y[:200], epochs=3, batch_size=32,
                                      validation_data=(X[200:], Y[200:]), seed=0, verbose=0)
        self.assertEqual(sorted(history), ["accuracy", "loss", "val_accuracy", "val_loss"])
        for values in history.values():
            self.assertEqual(len(values), 3)
            self.assertTrue(all(isinstance(value, float) for value in values))

    def test_without_validation_data_history_has_no_val_keys(self):
        X, Y = blobs()
        history = small_network().fit(X, Y, epochs=1, verbose=0)
        self.assertEqual(sorted(history), ["accuracy", "loss"])

    def test_reported_training_loss_is_the_mean_over_the_epochs_batches(self):
        # With lr tiny, the weights barely move, so the batch losses of the epoch average to
        # the loss over the whole set, even with a last partial batch (300 = 4 * 64 + 44).
        # float64 layers: in float32 the two sums would differ by rounding, ~1e-7.
        X, Y = blobs(dtype=np.float64)
        net = small_network(dtype=np.float64)
        expected_loss, expected_accuracy = net.evaluate(X, Y)
        history = net.fit(X, Y, epochs=1, batch_size=64, optimizer=SGD(lr=1e-12), verbose=0)
        self.assertAlmostEqual(history["loss"][0], expected_loss, places=9)
        self.assertAlmostEqual(history["accuracy"][0], expected_accuracy)

    def test_last_partial_batch_is_trained(self):
        X, Y = blobs(n=10)
        net = small_network()
        calls = []
        original = net.compute_gradients
        net.compute_gradients = lambda x, y: calls.append(len(x)) or original(x, y)
        net.fit(X, Y, epochs=1, batch_size=4, verbose=0)
        self.assertEqual(calls, [4, 4, 2])

    def test_same_seed_gives_identical_results(self):
        X, Y = blobs()
        runs = []
        for _ in range(2):
            net = small_network(seed=3)
            history = net.fit(X, Y, epochs=3, batch_size=16, optimizer=SGD(lr=0.05, momentum=0.9),
                              validation_data=(X, Y), seed=7, verbose=0)
            runs.append((history, [param.copy() for param, _ in net.parameters()]))
        self.assertEqual(runs[0][0], runs[1][0])
        for a, b in zip(runs[0][1], runs[1][1]):
            np.testing.assert_array_equal(a, b)

    def test_different_shuffling_seed_gives_different_results(self):
        X, Y = blobs()
        histories = [small_network(seed=3).fit(X, Y, epochs=2, batch_size=16, seed=seed,
                                               verbose=0)
                     for seed in (1, 2)]
        self.assertNotEqual(histories[0], histories[1])

    def fit_watching_dtypes(self, net, X, Y):
        """Fit one epoch; returns the set of dtypes every batch and every Dense layer saw."""
        seen = set()
        backward, compute_gradients = Dense.backward, Network.compute_gradients

        def watched_backward(layer, grad_output):
            seen.update((grad_output.dtype, layer.input.dtype))
            return backward(layer, grad_output)

        def watched_step(net, X_batch, Y_batch):
            seen.update((X_batch.dtype, Y_batch.dtype))
            return compute_gradients(net, X_batch, Y_batch)
        with mock.patch.object(Dense, "backward", watched_backward), \
                mock.patch.object(Network, "compute_gradients", watched_step):
            net.fit(X, Y, epochs=1, batch_size=64, optimizer=SGD(lr=0.01, momentum=0.9),
                    validation_data=(X, Y), verbose=0)
        return seen

    def assertParametersAre(self, net, dtype):
        self.assertEqual(net.dtype, dtype)
        for param, grad in net.parameters():
            self.assertEqual((param.dtype, grad.dtype), (dtype, dtype))

    def test_default_layers_compute_in_float32_whatever_the_data(self):
        # The obvious `pixels / 255.0` makes float64 data: cast once, up front, so every
        # batch and every product is float32 (float64 products take about twice as long).
        for data in (np.float64, np.float32, np.int64):
            X, Y = blobs(dtype=np.float64)
            X = np.round(X * 10).astype(data)
            net = small_network()
            self.assertEqual(self.fit_watching_dtypes(net, X, Y.astype(data)),
                             {np.dtype(np.float32)})
            self.assertParametersAre(net, np.float32)
            self.assertEqual(net.predict(X).dtype, np.float32)

    def test_float64_layers_keep_float64(self):
        for data in (np.float32, np.float64, np.int64):
            X, Y = blobs(dtype=np.float32)
            X = np.round(X * 10).astype(data)
            net = small_network(dtype=np.float64)
            self.assertEqual(self.fit_watching_dtypes(net, X, Y), {np.dtype(np.float64)})
            self.assertParametersAre(net, np.float64)
            self.assertEqual(net.predict(X).dtype, np.float64)

    def test_layers_that_disagree_take_the_first_parameters_dtype(self):
        X, Y = blobs()
        for first, other in ((np.float64, np.float32), (np.float32, np.float64)):
            net = Network([Dense(5, 16, seed=0, dtype=first), ReLU(), Scale(16),
                           Dense(16, 3, seed=1, dtype=other), Softmax()])
            self.assertEqual(net.layers[2].scale.dtype, np.float32)     # as the learner made it
            self.assertEqual(net.predict(X).dtype, first)                # predict casts too
            self.assertParametersAre(net, first)
            self.assertEqual(self.fit_watching_dtypes(net, X, Y), {np.dtype(first)})

    def test_astype_casts_every_parameter_gradient_and_buffer(self):
        net = Network([Dense(5, 4, seed=0), BatchNorm(4), ReLU(), Dense(4, 3), Softmax()])
        weights = net.layers[0].weights.copy()
        self.assertIs(net.astype(np.float64), net)
        self.assertParametersAre(net, np.float64)
        self.assertEqual({array.dtype for array in net.layers[1].buffers()}, {np.dtype("f8")})
        np.testing.assert_array_equal(net.layers[0].weights, weights)
        self.assertEqual(net.predict(blobs(n=4)[0]).dtype, np.float64)
        with self.assertRaises(ValueError) as caught:
            net.astype(np.int32)
        self.assertIn("Network.astype dtype must be np.float32", str(caught.exception))

    def test_a_network_without_parameters_computes_in_float32(self):
        net = Network([Softmax()])
        self.assertEqual(net.dtype, np.float32)
        self.assertEqual(net.predict(np.ones((2, 3))).dtype, np.float32)

    def test_data_beyond_float32s_range_is_refused_by_name(self):
        X, Y = blobs(n=4, dtype=np.float64)
        X[1, 2] = 1e300
        with self.assertRaises(ValueError) as caught:
            small_network().predict(X)
        self.assertIn("X must hold finite numbers (in the network's dtype, float32)",
                      str(caught.exception))
        self.assertEqual(small_network(dtype=np.float64).predict(X).dtype, np.float64)

    def test_column_major_data_trains_like_row_major(self):
        X, Y = blobs()
        a, b = small_network(), small_network()
        a.fit(X, Y, epochs=1, seed=0, verbose=0)
        b.fit(np.asfortranarray(X), Y, epochs=1, seed=0, verbose=0)
        np.testing.assert_array_equal(a.predict(X), b.predict(X))

    def test_divergence_stops_with_a_clear_error(self):
        X, Y = blobs()
        with self.assertRaises(FloatingPointError) as caught, warnings.catch_warnings():
            warnings.simplefilter("error")
            linear = Network([Dense(5, 3, seed=0)], loss="mse")     # no softmax to saturate
            linear.fit(X, Y, epochs=5, optimizer=SGD(lr=100.0), verbose=0)
        self.assertIn("smaller learning rate", str(caught.exception))

    def test_verbose_prints_one_keras_line_per_epoch(self):
        X, Y = blobs()
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            small_network().fit(X[:200], Y[:200], epochs=2, validation_data=(X[200:], Y[200:]),
                                verbose=1)
        lines = output.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        pattern = (r"^Epoch 2/2 - \d+\.\ds - loss: \d\.\d{4} - accuracy: \d\.\d{4}"
                   r" - val_loss: \d\.\d{4} - val_accuracy: \d\.\d{4}$")
        self.assertRegex(lines[1], pattern)

    def test_progress_shows_in_a_notebook_without_flooding_it(self):
        class NotebookOutput(io.StringIO):        # what a Jupyter or Colab cell prints to
            def isatty(self):
                return False

        NotebookOutput.__module__ = "ipykernel.iostream"
        X, Y = blobs()
        for every, counters in ((0.0, 2 * (300 // 32)), (3600.0, 0)):
            output = NotebookOutput()
            with contextlib.redirect_stdout(output), mock.patch.object(nn, "PROGRESS_SECONDS",
                                                                       every):
                small_network().fit(X, Y, epochs=2, batch_size=32, verbose=1)
            text = output.getvalue()
            self.assertEqual(text.count("\rEpoch 1/2 - ") + text.count("\rEpoch 2/2 - "),
                             counters + 2)                       # + the line of each epoch
            self.assertRegex(text, r"\rEpoch 2/2 - \d+\.\ds - loss: \d\.\d{4} - accuracy: "
                                   r"\d\.\d{4}\n$")
            if counters:
                self.assertIn("\rEpoch 1/2 - 64/300", text)   # the first batch shows nothing

    def test_training_at_chance_says_what_the_data_shows(self):
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, size=(300, 5)).astype(np.float32)
        labels = one_hot(rng.integers(0, 10, size=300), 10)       # labels as noise: chance

        def net():
            return Network([Dense(5, 16, seed=0), ReLU(), Dense(16, 10, seed=1), Softmax()])
        for X, optimizer, said in ((pixels, SGD(lr=0.01), "the inputs go up to 255: scale them "
                                                          "to [0, 1] (X / 255)"),
                                   (pixels / 255, SGD(lr=5.0), "lr is 5, far above the usual "
                                                               "0.1 for SGD")):
            output = io.StringIO()
            with contextlib.redirect_stdout(output), np.errstate(all="ignore"):
                net().fit(X, labels, epochs=2, optimizer=optimizer, seed=0, verbose=1)
            lines = output.getvalue().splitlines()
            self.assertEqual(len(lines), 3, lines)                   # two epochs and the hint
            self.assertRegex(lines[1], r"^Accuracy 0\.\d{4} after epoch 1 is chance for 10 "
                                       r"classes: ")
            self.assertIn(said, lines[1])
            with contextlib.redirect_stdout(io.StringIO()) as quiet, np.errstate(all="ignore"):
                net().fit(X, labels, epochs=1, optimizer=optimizer, seed=0, verbose=0)
            self.assertEqual(quiet.getvalue(), "")

    def test_verbose_0_prints_nothing(self):
        X, Y = blobs()
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            small_network().fit(X, Y, epochs=2, validation_data=(X, Y), verbose=0)
        self.assertEqual(output.getvalue(), "")

    def test_predict_and_evaluate_in_batches_match_one_batch(self):
        X, Y = blobs(dtype=np.float64)
        net = small_network(dtype=np.float64)        # float64: only rounding could differ
        np.testing.assert_allclose(net.predict(X, batch_size=7), net.forward(X), rtol=1e-12)
        loss, accuracy = net.evaluate(X, Y, batch_size=7)
        self.assertAlmostEqual(loss, net.loss(Y, net.forward(X)))


class TestLayerProtocol(unittest.TestCase):
    """Everything goes through forward, backward and parameters(): a learner's layer works
    wherever ours do."""

    def test_a_learners_layer_with_parameters_trains_in_the_middle(self):
        X = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
        Y = one_hot(np.arange(40) % 3, 3)
        dense = Dense(4, 3, seed=1)
        net = Network([Dense(5, 4, seed=0), ReLU(), Scale(4), dense, Softmax()])
        weights, before = dense.weights.copy(), net.predict(X)
        net.fit(X, Y, optimizer=SGD(lr=1e-12), verbose=0)       # so small nothing moves
        np.testing.assert_allclose(dense.weights, weights, atol=1e-9)
        np.testing.assert_allclose(net.predict(X), before, atol=1e-6)
        scale = net.layers[2].scale.copy()
        net.fit(X, Y, epochs=5, optimizer=SGD(lr=0.1), verbose=0)
        self.assertFalse(np.array_equal(net.layers[2].scale, scale))
        self.assertLess(net.evaluate(X, Y)[0], categorical_crossentropy(Y, before))

    def test_own_dense_trains_exactly_like_dense(self):
        X, Y = blobs()
        ours = Network([Dense(5, 16, seed=0), ReLU(), Dense(16, 3, seed=1), Softmax()])
        theirs = Network([OwnDense(5, 16, seed=0), ReLU(), OwnDense(16, 3, seed=1), Softmax()])
        for net in (ours, theirs):
            net.fit(X, Y, epochs=2, batch_size=32, optimizer=SGD(lr=0.05, momentum=0.9),
                    seed=0, verbose=0)
        for (a, _), (b, _) in zip(ours.parameters(), theirs.parameters()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_a_layer_used_twice_is_refused(self):
        relu = ReLU()
        with self.assertRaises(ValueError) as caught:
            Network([Dense(6, 5), relu, Dense(5, 5), relu, Dense(5, 2), Softmax()])
        self.assertIn("layers 1 and 3", str(caught.exception))
        self.assertIn("separate", str(caught.exception))

    def test_backward_stops_at_the_first_layer_with_parameters(self):
        net = Network([Dropout(0.1), Dense(5, 4), ReLU(), Dense(4, 3), Softmax()])
        flags = [layer.input_gradient_needed for layer in net.layers]
        self.assertEqual(flags, [False, False, True, True, True])
        X, _ = blobs(n=8)
        net.forward(X)
        self.assertIsNone(net.layers[1].backward(np.ones((8, 4), np.float32)))

    def test_only_the_optimizer_changes_parameters(self):
        X, Y = blobs()
        net = small_network()
        before = [param.copy() for param, _ in net.parameters()]
        net.backward(Y, net.forward(X))
        for a, (b, _) in zip(before, net.parameters()):
            np.testing.assert_array_equal(a, b)


class Recorder:
    """A callback that writes down what fit tells it: batches apart from the rest."""

    def __init__(self):
        self.events, self.batches = [], []

    def on_train_begin(self):
        self.events.append("train begins")

    def on_epoch_begin(self, epoch):
        self.events.append(("epoch begins", epoch))

    def on_train_batch_begin(self, batch):
        self.begun = batch

    def on_train_batch_end(self, batch, logs):
        self.batches.append((self.begun, batch, logs["size"], sorted(logs)))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch ends", epoch, sorted(logs)))

    def on_train_end(self):
        self.events.append("train ends")


class TestCallbacks(unittest.TestCase):
    def test_fit_tells_each_event_in_order(self):
        X, Y = blobs(n=10)
        recorder = Recorder()
        history = small_network().fit(X, Y, epochs=2, batch_size=4, validation_data=(X, Y),
                                      verbose=0, callbacks=[recorder])
        logs = ["accuracy", "loss", "size"]
        self.assertEqual(recorder.batches, [(0, 0, 4, logs), (1, 1, 4, logs), (2, 2, 2, logs)] * 2)
        metrics = sorted(history)
        self.assertEqual(recorder.events, ["train begins", ("epoch begins", 1),
                                           ("epoch ends", 1, metrics), ("epoch begins", 2),
                                           ("epoch ends", 2, metrics), "train ends"])

    def test_train_end_is_told_however_fit_ends(self):
        X, Y = blobs()
        recorder = Recorder()
        linear = Network([Dense(5, 3, seed=0)], loss="mse")
        with self.assertRaises(FloatingPointError):
            linear.fit(X, Y, epochs=5, optimizer=SGD(lr=100.0), verbose=0, callbacks=[recorder])
        self.assertEqual(recorder.events[-1], "train ends")

    def test_a_callback_needs_only_the_methods_it_uses(self):
        class EpochCounter:
            epochs = 0

            def on_epoch_end(self, epoch, logs):
                self.epochs += 1
        X, Y = blobs(n=20)
        counter = EpochCounter()
        small_network().fit(X, Y, epochs=3, verbose=0, callbacks=(counter,))
        self.assertEqual(counter.epochs, 3)

    def test_refuses_what_is_not_a_list_of_callbacks(self):
        X, Y = blobs(n=20)
        for callbacks, fragment in ((Recorder(), "callbacks must be a list"),
                                    ([Recorder(), "on_epoch_end"], "callbacks must be a list")):
            with self.assertRaises(ValueError) as caught:
                small_network().fit(X, Y, verbose=0, callbacks=callbacks)
            self.assertIn(fragment, str(caught.exception))


class TestHonestMetrics(unittest.TestCase):
    def test_regression_reports_no_accuracy(self):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 3)).astype(np.float32)
        Y = X @ np.array([[1.0], [-2.0], [0.5]], np.float32)
        net = Network([Dense(3, 8, seed=0), ReLU(), Dense(8, 1, seed=1)], loss="mse")
        history = net.fit(X, Y, epochs=3, validation_data=(X, Y), verbose=0)
        self.assertEqual(sorted(history), ["loss", "val_loss"])
        loss, accuracy = net.evaluate(X, Y)
        self.assertIsNone(accuracy)
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            net.fit(X, Y, epochs=1, verbose=1)
        self.assertNotIn("accuracy", output.getvalue())

    def test_single_sigmoid_output_counts_the_side_of_one_half(self):
        net = Network([Dense(2, 1, seed=0), Sigmoid()], loss="binary_crossentropy")
        P = np.array([[0.9], [0.2], [0.6], [0.4]])
        self.assertEqual(net.accuracy(np.array([[1], [0], [0], [0]]), P), 0.75)

    def test_learns_a_yes_no_answer_with_binary_crossentropy(self):
        X, Y = blobs()
        yes = Y[:, :1]                                   # "is it cloud 0?"
        net = Network([Dense(5, 8, seed=0), Tanh(), Dense(8, 1, seed=1, init="glorot"),
                       Sigmoid()], loss="binary_crossentropy")
        net.fit(X, yes, epochs=10, optimizer=SGD(lr=0.1, momentum=0.9), seed=0, verbose=0)
        self.assertGreater(net.evaluate(X, yes)[1], 0.95)

    def test_crossentropy_without_probabilities_is_refused(self):
        X = np.array([[5.0, -5.0], [-5.0, 5.0]])
        for layers, loss, needed in (([Dense(2, 2, seed=0)], "categorical_crossentropy",
                                      "Softmax()"),
                                     ([Dense(2, 1, seed=0)], "binary_crossentropy", "Sigmoid()")):
            net = Network(layers, loss=loss)
            with self.assertRaises(ValueError) as caught:
                net.fit(X, np.eye(2)[:, :net.forward(X).shape[1]], verbose=0)
            self.assertIn("needs probabilities", str(caught.exception))
            self.assertIn(needed, str(caught.exception))

    def test_a_softmax_of_your_own_trains_with_crossentropy_and_has_accuracy(self):
        class MySoftmax(nn.Layer):                       # not nn's: no fused gradient
            def forward(self, z):
                e = np.exp(z - z.max(axis=1, keepdims=True))
                self.p = e / e.sum(axis=1, keepdims=True)
                return self.p

            def backward(self, g):
                return self.p * (g - (g * self.p).sum(axis=1, keepdims=True))

        X, Y = blobs()
        net = Network([Dense(5, 3, seed=0), MySoftmax()])
        self.assertIsNone(net.fused_prime)
        history = net.fit(X, Y, epochs=5, optimizer=SGD(lr=0.5), seed=0, verbose=0)
        self.assertIn("accuracy", history)
        self.assertGreater(net.evaluate(X, Y)[1], 0.9)

    def test_a_softmax_subclass_has_its_own_backward_called(self):
        calls = []

        class CountingSoftmax(Softmax):
            def backward(self, g):
                calls.append(g.shape)
                return super().backward(g)

        X, Y = blobs()
        net = Network([Dense(5, 3, seed=0), CountingSoftmax()])
        self.assertIsNone(net.fused_prime)
        net.fit(X[:8], Y[:8], epochs=1, batch_size=8, verbose=0)
        self.assertEqual(calls, [(8, 3)])

    def test_accuracy_is_decided_by_the_targets(self):
        net = Network([Dense(2, 2, seed=0)], loss="mse")
        P = np.array([[0.9, 0.1], [0.2, 0.8]])
        self.assertEqual(net.accuracy(np.array([[1.0, 0.0], [1.0, 0.0]]), P), 0.5)
        self.assertEqual(nn.accuracy_kind(np.array([[1.0], [0.0]])), "yes/no")
        self.assertIsNone(net.accuracy(np.array([[0.5, 0.5], [2.0, 0.0]]), P))

    def test_a_step_that_breaks_the_weights_stops_fit(self):
        # One step of a huge learning rate: the loss of that step is finite (it is computed
        # before the update), but the weights it leaves are not.
        X, Y = blobs()
        net = small_network()
        with self.assertRaises(FloatingPointError) as caught, warnings.catch_warnings():
            warnings.simplefilter("error")
            net.fit(X, Y, epochs=1, batch_size=len(X), optimizer=SGD(lr=1e308), verbose=0)
        self.assertIn("diverged", str(caught.exception))


    def test_a_layer_that_makes_nan_is_told_when_and_what_to_try(self):
        class LogForward(nn.Layer):                      # log of negative inputs: NaN
            def forward(self, x):
                return np.log(x)

            def backward(self, g):
                return g

        class NanBackward(nn.Layer):                     # a forward that is right, a backward not
            def forward(self, x):
                return x

            def backward(self, g):
                return g * np.nan

        X, Y = blobs()
        for layer in (LogForward(), NanBackward()):
            net = Network([Dense(5, 8, seed=0), layer, Dense(8, 3, seed=1), Softmax()])
            with self.assertRaises(FloatingPointError) as caught, np.errstate(all="ignore"):
                net.fit(X, Y, epochs=2, verbose=0)
            message = str(caught.exception)
            self.assertRegex(message, r"^in epoch 1, the training loss of batch \d+ became nan")
            self.assertIn("check_gradients(layer, x)", message)


class TestEarlyStopping(unittest.TestCase):
    def overfitting_run(self, verbose=0, batchnorm=False, **options):
        X, Y = blobs(n=60, seed=1)
        noisy = one_hot(np.random.default_rng(2).integers(0, 3, size=60), 3)   # labels as noise
        net = Network([Dense(5, 64, seed=0), ReLU()] + [BatchNorm(64)] * batchnorm
                      + [Dense(64, 3, seed=1), Softmax()])
        history = net.fit(X[:40], noisy[:40], epochs=60, batch_size=8,
                          optimizer=SGD(lr=0.1, momentum=0.9),
                          validation_data=(X[40:], noisy[40:]), seed=0, verbose=verbose,
                          **options)
        return net, history, (X[40:], noisy[40:])

    def test_stops_and_restores_the_best_epoch(self):
        net, history, validation = self.overfitting_run(patience=3)
        stopped, best = history["stopped_epoch"], history["best_epoch"]
        self.assertIsNotNone(stopped)
        self.assertEqual(stopped, best + 3)
        self.assertEqual(len(history["loss"]), stopped)
        best_loss = history["val_loss"][best - 1]
        self.assertEqual(min(history["val_loss"]), best_loss)
        self.assertAlmostEqual(net.evaluate(*validation)[0], best_loss, places=5)

    def test_restores_the_best_epochs_running_statistics_too(self):
        net, history, validation = self.overfitting_run(patience=3, batchnorm=True)
        best_loss = history["val_loss"][history["best_epoch"] - 1]
        self.assertAlmostEqual(net.evaluate(*validation)[0], best_loss, places=5)

    def test_without_restore_keeps_the_last_weights(self):
        net, history, validation = self.overfitting_run(patience=2, restore_best=False)
        self.assertAlmostEqual(net.evaluate(*validation)[0], history["val_loss"][-1], places=5)

    def test_verbose_says_it_stopped_and_which_weights_it_kept(self):
        for restore_best, kept in ((True, r"kept the weights of epoch {best}, the best val_loss"),
                                   (False, r"kept the weights of epoch {stopped}, the last")):
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                _, history, _ = self.overfitting_run(patience=3, restore_best=restore_best,
                                                     verbose=1)
            last = output.getvalue().splitlines()[-1]
            stopped, best = history["stopped_epoch"], history["best_epoch"]
            self.assertRegex(last, rf"^Early stopping after epoch {stopped}: val_loss has not "
                             rf"improved for 3 epochs; " + kept.format(best=best, stopped=stopped))

    def test_needs_validation_data(self):
        X, Y = blobs()
        with self.assertRaises(ValueError) as caught:
            small_network().fit(X, Y, patience=2, verbose=0)
        self.assertIn("validation_data", str(caught.exception))

    def test_a_validation_loss_that_is_not_finite_is_divergence(self):
        X, Y = blobs(n=40)
        for patience in (2, None):
            net = Network([Dense(5, 3, seed=0)], loss="mse")
            with self.assertRaises(FloatingPointError) as caught:   # squares overflow float32
                net.fit(X, Y, epochs=3, validation_data=(X * 1e30, Y), patience=patience,
                        verbose=0)
            self.assertIn("the validation loss became inf", str(caught.exception))
            self.assertIn("diverged", str(caught.exception))

    def test_weights_that_are_not_finite_after_the_last_step_are_divergence(self):
        X, Y = blobs(n=40)
        net = Network([Dense(5, 3, seed=0)], loss="mse")
        with self.assertRaises(FloatingPointError) as caught:   # one finite loss, one huge step
            net.fit(X, Y, epochs=1, batch_size=len(X), optimizer=SGD(lr=1e38),
                    validation_data=(X, Y), verbose=0)
        self.assertIn("in epoch 1, a weight became NaN or infinite", str(caught.exception))
        self.assertIn("diverged", str(caught.exception))


class TestComputeGradients(unittest.TestCase):
    def test_no_backward_after_a_loss_that_is_not_finite(self):
        X, Y = blobs(n=8)
        net = small_network()
        net.layers[0].weights[0, 0] = np.nan
        loss, _ = net.compute_gradients(X, Y)
        self.assertTrue(np.isnan(loss))
        self.assertFalse(net.layers[0].grad_weights.any())   # backward never ran
        with self.assertRaises(FloatingPointError):
            net.train_on_batch(X, Y, SGD(lr=0.1))


class TestSGD(unittest.TestCase):
    def test_follows_pytorchs_rule_step_by_step(self):
        rng = np.random.default_rng(12)
        for momentum, weight_decay in ((0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.8, 0.05)):
            layer = Dense(3, 2, seed=0, dtype=np.float64)
            optimizer = SGD(lr=0.1, momentum=momentum, weight_decay=weight_decay)
            w = layer.weights.copy()
            v = np.zeros_like(w)
            for _ in range(4):
                g = rng.standard_normal(w.shape)
                layer.grad_weights[:] = g
                layer.grad_biases[:] = 0
                optimizer.step(layer.parameters())
                g = g + weight_decay * w                   # PyTorch: d_p = grad + wd * p
                if momentum:
                    v = momentum * v + g                   # buf = momentum * buf + d_p
                    g = v
                w = w - 0.1 * g                            # p = p - lr * d_p
                np.testing.assert_allclose(layer.weights, w, rtol=1e-14, atol=1e-15)

    def test_state_for_keeps_each_parameters_state_while_the_parameters_stay(self):
        layer = Dense(3, 2)
        state = nn.state_for(layer.parameters(), None)
        self.assertEqual([(s.shape, s.dtype, s.any()) for s in state],
                         [((3, 2), np.float32, False), ((2,), np.float32, False)])
        self.assertIs(nn.state_for(layer.parameters(), state), state)
        self.assertIsNot(nn.state_for(Dense(3, 4).parameters(), state), state)
        self.assertIsNot(nn.state_for(Network([layer]).astype(np.float64).parameters(), state),
                         state)

    def test_lr_decay_multiplies_lr_after_each_epoch(self):
        X, Y = blobs()
        for optimizer in (SGD(lr=0.1, lr_decay=0.5), Adam(lr=0.1, lr_decay=0.5)):
            small_network().fit(X, Y, epochs=3, optimizer=optimizer, verbose=0)
            self.assertAlmostEqual(optimizer.lr, 0.1 * 0.5 ** 3)


class TestAdam(unittest.TestCase):
    def test_follows_pytorchs_rule_step_by_step(self):
        rng = np.random.default_rng(13)
        for weight_decay in (0.0, 0.01):
            layer = Dense(3, 2, seed=0, dtype=np.float64)
            optimizer = Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=weight_decay)
            w = layer.weights.copy()
            m, v = np.zeros_like(w), np.zeros_like(w)
            for t in range(1, 6):
                g = rng.standard_normal(w.shape)
                layer.grad_weights[:] = g
                layer.grad_biases[:] = 0
                optimizer.step(layer.parameters())
                g = g + weight_decay * w                   # L2 weight decay, as PyTorch adds it
                m = 0.8 * m + 0.2 * g
                v = 0.99 * v + 0.01 * g * g
                m_hat, v_hat = m / (1 - 0.8 ** t), v / (1 - 0.99 ** t)
                w = w - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-6)
                np.testing.assert_allclose(layer.weights, w, rtol=1e-13, atol=1e-15)
                TestAdam.worst = max(getattr(TestAdam, "worst", 0.0),
                                     float(np.abs(layer.weights - w).max()))

    def test_first_step_moves_each_weight_by_about_lr(self):
        layer = Dense(4, 3, seed=0, dtype=np.float64)
        before = layer.weights.copy()
        layer.grad_weights[:] = np.random.default_rng(0).standard_normal((4, 3)) * 1e-3
        Adam(lr=0.01).step(layer.parameters())
        np.testing.assert_allclose(np.abs(layer.weights - before), 0.01, rtol=1e-3)

    def test_trains(self):
        X, Y = blobs()
        net = small_network()
        net.fit(X, Y, epochs=5, optimizer=Adam(lr=0.01), seed=0, verbose=0)
        self.assertGreater(net.evaluate(X, Y)[1], 0.95)


class TestBadInput(unittest.TestCase):
    def assertValueError(self, function, *fragments):
        with self.assertRaises(ValueError) as caught:
            function()
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_input_gradient_refuses_a_target_that_is_no_class(self):
        net, X = Network([Dense(4, 3, seed=0), Softmax()]), np.ones((5, 4))
        self.assertEqual(net.input_gradient(X, 2).shape, X.shape)
        self.assertEqual(net.input_gradient(X, [0, 1, 2, 0, 1]).shape, X.shape)
        for target in (-1, 3, 1.5, [0, -1, 2, 0, 1]):    # -1 would be the last class, silently
            self.assertValueError(lambda: net.input_gradient(X, target), "input_gradient target",
                                  "whole numbers 0..2")
        self.assertValueError(lambda: net.input_gradient(X, [0, 1]), "one for each of the 5 rows")

    @unittest.skipUnless(sys.platform.startswith("linux"), "resource limits as on Linux")
    def test_constructors_bound_what_they_allocate(self):
        # In a child process of at most 1 GiB: a regression fails instead of taking 5 GB.
        script = textwrap.dedent("""
            import numpy as np, nn
            for make in (lambda: nn.Conv2D(1, 1, 20000), lambda: nn.Conv2D(1, 1, 5, padding=5),
                         lambda: nn.Conv2D(1, 1, 3, stride=65), lambda: nn.Conv2D(8000, 8000, 1),
                         lambda: nn.Dense(10**4, 10**4), lambda: nn.MaxPool2D(10**6),
                         lambda: nn.MaxPool2D(2).forward(np.zeros((1, 1, 0, 0)))):
                try:
                    make()
                    print("built")
                except ValueError as error:
                    print(str(error).split(",")[0])
        """)
        status, output, errors = run_bounded(script)
        self.assertEqual(status, 0, errors)
        self.assertEqual(output.splitlines(), [
            "Conv2D kernel_size must be a positive whole number and at most 64",
            "Conv2D padding must be a whole number >= 0 and at most 4",
            "Conv2D stride must be a positive whole number and at most 64",
            "Conv2D would hold 64",
            "Dense would hold 100",
            "MaxPool2D size must be a positive whole number and at most 64",
            "MaxPool2D() expects input of shape (batch"])

    def test_numbers_too_large_and_classes_for_objects(self):
        X, Y = blobs()
        self.assertValueError(lambda: SGD(lr=10 ** 309), "SGD lr must be a number")
        self.assertValueError(lambda: Adam(lr=10 ** 309), "Adam lr must be a number")
        self.assertValueError(lambda: small_network().fit(X, Y, optimizer=SGD, verbose=0),
                              "optimizer must be", "the class SGD", "SGD(...)")
        self.assertValueError(lambda: Network.load("model.npz", custom_objects=[1]),
                              "custom_objects must be a dict")
        self.assertValueError(lambda: Network.load("model.npz", custom_objects={1: Scale}),
                              "custom_objects must be a dict", "got {1: <class")
        self.assertValueError(lambda: Network.load(12), "path must be a file name")
        self.assertValueError(lambda: small_network().save(None), "path must be a file name")

    def test_wrong_input_width_names_the_layer(self):
        X, Y = blobs()
        net = small_network()
        self.assertValueError(lambda: net.fit(X[:, :4], Y, verbose=0), "Dense(5, 16)", "(batch, 5)")
        self.assertValueError(lambda: net.predict(X[:, :4]), "Dense(5, 16)")
        self.assertValueError(lambda: Dense(5, 16).forward(X[:, :4]), "Dense(5, 16)", "(300, 4)")
        mismatched = Network([Dense(4, 8), ReLU(), Dense(6, 2), Softmax()])
        self.assertValueError(lambda: mismatched.fit(X[:, :4], Y[:, :2], verbose=0),
                              "Dense(6, 2)", "(batch, 6)")

    def test_row_counts_differ(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y[:10], verbose=0),
                              "same number of rows", "300", "10")

    def test_targets_wrong_shape_or_kind(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y[:, :2], verbose=0),
                              "(examples, 3)", "one_hot")
        self.assertValueError(lambda: small_network().evaluate(X, Y[:, 0]), "one target row")
        self.assertValueError(lambda: small_network().fit(X, Y.astype(complex), verbose=0),
                              "Y", "real numbers")

    def test_non_finite_inputs(self):
        X, Y = blobs()
        for bad in (np.nan, np.inf):
            X_bad = X.copy()
            X_bad[3, 2] = bad
            self.assertValueError(lambda: small_network().fit(X_bad, Y, verbose=0), "finite")

    def test_crossentropy_targets_must_be_distributions(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y * 2, verbose=0), "sum to 1")
        small_network(loss="mse").fit(X, Y * 2, epochs=1, verbose=0)     # fine for mse
        net = Network([Dense(5, 1), Sigmoid()], loss="binary_crossentropy")
        self.assertValueError(lambda: net.fit(X, Y[:, :1] * 3, verbose=0), "[0, 1]")

    def test_bad_validation_data(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y, validation_data=X, verbose=0),
                              "pair")
        self.assertValueError(
            lambda: small_network().fit(X, Y, validation_data=(X, Y[:5]), verbose=0),
            "X_val", "Y_val")

    def test_bad_fit_and_predict_arguments(self):
        X, Y = blobs()
        for value in (0, -1, 2.5, None):
            self.assertValueError(lambda: small_network().fit(X, Y, batch_size=value, verbose=0),
                                  "batch_size")
            self.assertValueError(lambda: small_network().fit(X, Y, epochs=value, verbose=0),
                                  "epochs")
        self.assertValueError(lambda: small_network().fit(X, Y, seed="abc", verbose=0), "seed")
        for value in (0, 2.5, None, (os.cpu_count() or 1) + 1):
            self.assertValueError(lambda: small_network().fit(X, Y, workers=value, verbose=0),
                                  "workers")
        self.assertValueError(lambda: small_network().fit(X, Y, optimizer="sgd", verbose=0),
                              "optimizer", "SGD")
        self.assertValueError(lambda: small_network().fit(X, Y, patience=0, verbose=0,
                                                          validation_data=(X, Y)), "patience")
        self.assertValueError(lambda: small_network().predict(X, batch_size=0), "batch_size")
        self.assertValueError(lambda: small_network().predict(X[0]), "one example per row")

    def test_train_on_batch_checks_as_fit_does_and_changes_nothing(self):
        X, Y = blobs(n=32)
        net = small_network()
        before = [param.copy() for param, _ in net.parameters()]
        for x, y, optimizer, fragment in ((X, Y[:, :1], SGD(lr=0.1), "(examples, 3)"),
                                          (X, Y * 5, SGD(lr=0.1), "sum to 1"),
                                          (X, np.where(Y == 1, np.nan, Y), SGD(lr=0.1),
                                           "Y must hold finite numbers"),
                                          (X, Y, None, "optimizer must be"),
                                          (X, Y, "sgd", "optimizer must be"),
                                          (X, Y, SGD, "the class SGD")):
            self.assertValueError(lambda: net.train_on_batch(x, y, optimizer), fragment)
        for a, (b, _) in zip(before, net.parameters()):
            np.testing.assert_array_equal(a, b)
        listed, array = small_network(), small_network()        # a list is data too, as in fit
        listed.train_on_batch(X.tolist(), Y.tolist(), SGD(lr=0.1))
        array.train_on_batch(X, Y, SGD(lr=0.1))
        for (a, _), (b, _) in zip(listed.parameters(), array.parameters()):
            np.testing.assert_array_equal(a, b)

    def test_backward_before_forward_names_the_layer(self):
        for layer in (Dense(3, 2), Conv2D(1, 2, 3), MaxPool2D(), Flatten(), Reshape((3,)),
                      BatchNorm(3), ReLU(), Softmax(), Dropout(0.5), RandomShift(1)):
            grad_output = np.ones((2, 2, 1, 1) if isinstance(layer, Conv2D) else (2, 3))
            with self.assertRaises(AttributeError) as caught:
                layer.backward(grad_output.astype(np.float32))
            self.assertIn(type(layer).__name__ + " has no attribute", str(caught.exception))
            self.assertIn("call forward before backward", str(caught.exception))

    def test_optimizer_hyper_parameters(self):
        self.assertValueError(lambda: SGD(lr=0), "lr", "> 0")
        self.assertValueError(lambda: SGD(lr=-0.1), "lr")
        self.assertValueError(lambda: SGD(lr=float("nan")), "lr")
        self.assertValueError(lambda: SGD(lr="0.1"), "lr")
        self.assertValueError(lambda: SGD(lr=0.1, momentum=-0.5), "momentum", ">= 0")
        self.assertValueError(lambda: SGD(lr=0.1, weight_decay=-1e-4), "weight_decay", ">= 0")
        self.assertValueError(lambda: SGD(lr=0.1, lr_decay=0), "lr_decay")
        self.assertValueError(lambda: SGD(lr=0.1, lr_decay=1.5), "lr_decay")
        self.assertValueError(lambda: Adam(beta1=-0.1), "Adam beta1")
        self.assertValueError(lambda: Adam(beta2=1.0), "Adam beta2")
        self.assertValueError(lambda: Adam(eps=0), "Adam eps", "> 0")
        self.assertValueError(lambda: Adam(weight_decay=-1), "Adam weight_decay")

    def test_bad_layers(self):
        for n_in, n_out in ((0, 3), (3, 0), (-2, 3), (2.5, 3)):
            self.assertValueError(lambda: Dense(n_in, n_out), "Dense", "positive")
        self.assertValueError(lambda: Dense(3, 3, init="uniform"), "init", "he", "glorot")
        self.assertValueError(lambda: Dense(3, 3, seed="abc"), "Dense seed")
        self.assertValueError(lambda: Dense(3, 3, dtype=np.int32), "Dense dtype", "float32")
        for rate in (1, 1.5, -0.1, "0.5", None):
            self.assertValueError(lambda: Dropout(rate), "Dropout rate", "[0, 1)")
        self.assertValueError(lambda: LeakyReLU(-0.1), "LeakyReLU slope")

    def test_bad_networks(self):
        self.assertValueError(lambda: Network(None), "list of layers")
        self.assertValueError(lambda: Network(Dense(2, 2)), "list of layers")
        self.assertValueError(lambda: Network([]), "list of layers (at least one)")
        self.assertValueError(lambda: Network([Dense(2, 2), "relu"]), "layer 1", "Layer")
        self.assertValueError(lambda: Network([Dense(2, 2)], loss="hinge"), "hinge",
                              "categorical_crossentropy", "mse")
        self.assertValueError(lambda: Network([Dense(2, 2)], loss=["mse"]), "unknown loss")

    def test_one_hot_labels(self):
        np.testing.assert_array_equal(one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
        self.assertEqual(one_hot([1], 2).dtype, np.float32)
        self.assertValueError(lambda: one_hot([0, 3], 3), "0..2", "3", "index 1")
        self.assertValueError(lambda: one_hot([-1], 3), "-1")
        self.assertValueError(lambda: one_hot([0.5], 3), "whole numbers")
        self.assertValueError(lambda: one_hot([[0]], 3), "1-D")
        self.assertValueError(lambda: one_hot([0], 10 ** 12), "n_classes", "at most 50000000")

    def test_no_bare_asserts_for_user_errors(self):
        with open(nn.__file__, encoding="utf-8") as file:
            self.assertNotIn("assert ", file.read())


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------

UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)
    return 0.0


class LeavesATraceWhenUnpickled:
    def __reduce__(self):
        return (record_unpickling, ())


class SaveLoadCase(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.folder.name, "model.npz")

    def tearDown(self):
        self.folder.cleanup()

    def trained(self, hidden=ReLU, loss="categorical_crossentropy"):
        X, Y = blobs()
        net = Network([Dense(5, 16, seed=0), hidden(), Dense(16, 3, seed=1), Softmax()],
                      loss=loss)
        net.fit(X, Y, epochs=2, verbose=0)
        return net, X

    def good_arrays(self):
        net, _ = self.trained()
        net.save(self.path)
        with np.load(self.path) as stored:
            return {name: stored[name] for name in stored.files}

    def assertRefused(self, content=None, arrays=None, fragment="not a model saved by nn"):
        if content is not None:
            with open(self.path, "wb") as file:
                file.write(content)
        if arrays is not None:
            np.savez(self.path, **arrays)
        with self.assertRaises(ValueError) as caught:
            Network.load(self.path)
        self.assertIn(fragment, str(caught.exception))
        return str(caught.exception)


class TestSaveLoad(SaveLoadCase):
    def test_round_trip_gives_identical_predictions(self):
        for hidden, loss in ((ReLU, "categorical_crossentropy"), (Sigmoid, "mse"),
                             (Tanh, "categorical_crossentropy"),
                             (lambda: LeakyReLU(0.2), "mse")):
            net, X = self.trained(hidden, loss)
            net.save(self.path)
            again = Network.load(self.path)
            self.assertEqual(repr(again), repr(net))
            self.assertEqual(again.loss_name, loss)
            np.testing.assert_array_equal(again.predict(X), net.predict(X))

    def test_dropout_and_binary_crossentropy_round_trip(self):
        net = Network([Dense(5, 4), Dropout(0.25), Dense(4, 1), Sigmoid()],
                      loss="binary_crossentropy")
        net.predict(np.ones((1, 5)))                # an untrained network is saved once run
        net.save(self.path)
        again = Network.load(self.path)
        self.assertEqual(again.layers[1].rate, 0.25)
        self.assertEqual(again.loss_name, "binary_crossentropy")

    def test_float64_model_round_trip(self):
        X, Y = blobs()
        net = small_network(dtype=np.float64)
        net.fit(X, Y, epochs=1, verbose=0)
        net.save(self.path)
        self.assertEqual(Network.load(self.path).layers[0].weights.dtype, np.float64)

    def test_a_learners_layers_round_trip_with_custom_objects(self):
        X, Y = blobs()
        net = Network([Dense(5, 4, seed=0), ReLU(), Scale(4), OwnDense(4, 3, seed=1), Softmax()])
        net.fit(X, Y, epochs=1, verbose=0)
        net.save(self.path)
        message = self.assertRefused(fragment="custom_objects={'Scale': Scale}")
        self.assertNotIn("pickle", message)
        again = Network.load(self.path, custom_objects={"Scale": Scale, "OwnDense": OwnDense})
        np.testing.assert_array_equal(again.predict(X), net.predict(X))
        with self.assertRaises(ValueError):
            Network.load(self.path, custom_objects={"Scale": "Scale"})

    def test_a_learners_layer_with_a_buffer_is_cast_saved_and_loaded(self):
        X, Y = blobs(dtype=np.float64)
        net = Network([RunningCentre(5), Dense(5, 3, seed=0, dtype=np.float64), Softmax()])
        net.fit(X + 7, Y, epochs=1, seed=0, verbose=0)
        centre = net.layers[0].mean
        self.assertEqual(centre.dtype, np.float64)       # cast to the parameters' dtype
        self.assertTrue(np.all(centre > 3), centre)              # learned while training
        net.save(self.path)
        again = Network.load(self.path, custom_objects={"RunningCentre": RunningCentre})
        np.testing.assert_array_equal(again.layers[0].mean, centre)
        np.testing.assert_array_equal(again.predict(X), net.predict(X))
        with np.load(self.path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        del arrays["layer0_buffer0"]
        np.savez(self.path, **arrays)
        with self.assertRaises(ValueError) as caught:
            Network.load(self.path, custom_objects={"RunningCentre": RunningCentre})
        self.assertIn("layer 0 (RunningCentre(n=5)) buffer 0 is missing (no array "
                      "'layer0_buffer0')", str(caught.exception))

    def test_a_buffer_that_is_not_finite_is_not_saved(self):
        net = Network([BatchNorm(5), Dense(5, 3), Softmax()])
        net.layers[0].running_var[2] = np.nan
        with self.assertRaises(ValueError) as caught:
            net.save(self.path)
        self.assertIn("buffer 1 holds NaN", str(caught.exception))
        self.assertFalse(os.path.exists(self.path))

    def test_file_holds_no_pickles(self):
        net, _ = self.trained()
        net.save(self.path)
        with np.load(self.path, allow_pickle=False) as stored:
            self.assertTrue(all(stored[name].dtype != object for name in stored.files))

    def test_failed_save_leaves_the_old_file_intact(self):
        net, X = self.trained()
        net.save(self.path)
        with open(self.path, "rb") as file:
            before = file.read()
        with mock.patch.object(np, "savez", side_effect=OSError("disk full")):
            with self.assertRaises(OSError):
                net.save(self.path)
        with open(self.path, "rb") as file:
            self.assertEqual(file.read(), before)
        self.assertEqual(os.listdir(self.folder.name), ["model.npz"])

    def test_a_broken_model_is_not_saved(self):
        net, _ = self.trained()
        net.layers[0].weights[0, 0] = np.nan
        with self.assertRaises(ValueError) as caught:
            net.save(self.path)
        self.assertIn("NaN", str(caught.exception))
        self.assertEqual(os.listdir(self.folder.name), [])

    def test_unsaveable_layers_are_refused(self):
        class Dense(nn.Dense):                      # a learner's class named like ours
            pass

        class Opaque(ReLU):
            def config(self):
                return {"function": print}

        class Forgetful(Scale):                     # Scale(n, bias) whose config() gives n only
            def __init__(self, n, bias):
                super().__init__(n)

        class NoConfig(Layer):                      # Layer's config(), {}, for a layer that needs n
            def __init__(self, n):
                self.n = n

            def forward(self, x):
                return x

        for layer, fragment in ((Dense(2, 2), "rename the class"), (Opaque(), "config() must"),
                                (Forgetful(2, 0.5), "Forgetful() needs bias, which its config() "
                                                    "does not give"),
                                (NoConfig(2), "NoConfig() needs n, which its config()")):
            with self.assertRaises(ValueError) as caught:
                Network([Reshape((2,)), layer], loss="mse").save(self.path)
            self.assertIn(fragment, str(caught.exception))
        self.assertFalse(os.path.exists(self.path))

    def test_a_network_never_run_is_saved_if_its_first_layer_says_what_it_takes(self):
        # The file records the shape of an example, which load needs to check the model.
        Network([Dense(3, 2, seed=0), Softmax()]).save(self.path)
        again = Network.load(self.path)
        self.assertEqual(again.input_shape, (3,))
        np.testing.assert_array_equal(again.layers[0].weights, Dense(3, 2, seed=0).weights)
        os.remove(self.path)
        with self.assertRaises(ValueError) as caught:
            Network([Reshape((1, 2, 2)), Flatten(), Dense(4, 2), Softmax()]).save(self.path)
        self.assertIn("never seen an example", str(caught.exception))
        self.assertFalse(os.path.exists(self.path))

    def test_a_path_that_is_not_a_file_name_is_refused(self):
        net, _ = self.trained()
        for path in (b"model.npz", 3, None):
            for action in (net.save, Network.load):
                with self.assertRaises(ValueError) as caught:
                    action(path)
                self.assertIn("path must be a file name (a str or a pathlib.Path)",
                              str(caught.exception))
        self.assertEqual(os.listdir(self.folder.name), [])

    def test_the_targets_permissions_are_kept_and_a_new_file_follows_the_umask(self):
        net, _ = self.trained()
        net.save(self.path)
        os.chmod(self.path, 0o600)
        net.save(self.path)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        with nn.atomic_file(self.path, "w") as file:     # outputs.py writes its files so
            file.write("text")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        for umask, mode in ((0o077, 0o600), (0o022, 0o644)):
            os.remove(self.path)
            previous = os.umask(umask)
            try:
                net.save(self.path)
            finally:
                os.umask(previous)
            self.assertEqual(os.stat(self.path).st_mode & 0o777, mode, oct(umask))

    @unittest.skipIf(sys.platform == "win32", "POSIX signals")
    def test_a_signal_during_a_save_is_the_programs_to_decide(self):
        # nn installs no signal handler. The old model stays whole whatever happens; under
        # nohup (SIGHUP ignored) the save goes on; a program's own handler that exits removes
        # the temporary file; SIGTERM's default ends the process, as it would anyway.
        old, _ = self.trained()
        old.save(self.path)
        status, said = self.signal_during_a_save([signal.SIGHUP, signal.SIGTERM], """
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            save(0.1)
            print("saved", flush=True)
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
            save(30)""")
        self.assertEqual((status, said), (3, ["saving", "saved", "saving"]))
        self.assertEqual(os.listdir(self.folder.name), ["model.npz"])
        self.assertEqual(Network.load(self.path).layers[0].n_in, 3)      # the first new model
        old.save(self.path)
        with open(self.path, "rb") as file:
            before = file.read()
        status, said = self.signal_during_a_save([signal.SIGTERM], "save(30)")
        self.assertEqual((status, said), (-signal.SIGTERM, ["saving"]))
        with open(self.path, "rb") as file:
            self.assertEqual(file.read(), before)

    def signal_during_a_save(self, signals, actions):
        """Run `actions` in a child process where save(seconds) saves a new model slowly, and
        send the next of `signals` each time a save has written its file. Returns (exit status,
        the lines it printed)."""
        script = textwrap.dedent(f"""
            import signal, sys, time
            sys.path.insert(0, {os.path.dirname(os.path.abspath(nn.__file__))!r})
            import numpy as np, nn
            real = np.savez
            def save(seconds):
                def slow(file, **arrays):
                    real(file, **arrays)
                    print("saving", flush=True)
                    time.sleep(seconds)
                np.savez = slow
                nn.Network([nn.Dense(3, 2), nn.Softmax()]).save({self.path!r})
        """) + textwrap.dedent(actions)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True)
        lines, signals = [], list(signals)
        with child.stdout:
            for line in child.stdout:
                lines.append(line.strip())
                if lines[-1] == "saving":
                    child.send_signal(signals.pop(0))
        child.wait(timeout=20)
        return child.returncode, lines

    def test_loading_holds_at_most_load_factor_times_the_arrays(self):
        import tracemalloc                          # NumPy reports its arrays to tracemalloc
        for dtype in (np.float32, np.float64):
            net = Network([Dense(500, 400, dtype=dtype), ReLU(), Dense(400, 30, dtype=dtype),
                           Softmax()])
            net.save(self.path)
            stored = sum(param.nbytes for param, _ in net.parameters())
            tracemalloc.start()
            try:
                Network.load(self.path)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            self.assertLess(peak, nn.LOAD_FACTOR * stored, dtype.__name__)

    def test_a_model_over_the_budget_says_how_to_load_it(self):
        net, X = self.trained()
        net.save(self.path)
        for budget, fragment in ((2_000, "its arrays, 2,316 bytes unpacked, held 4 times "
                                         "over while loading, would take more than "
                                         "nn.MAX_MODEL_BYTES (2,000 bytes)"),
                                 (20_000, "and those before it, with a batch of 128 examples, "
                                          "would take more than nn.MAX_MODEL_BYTES")):
            with mock.patch.object(nn, "MAX_MODEL_BYTES", budget):
                message = self.assertRefused(fragment=fragment)
            self.assertIn("is a model larger than nn loads", message)
            self.assertIn("raise nn.MAX_MODEL_BYTES", message)
        np.testing.assert_array_equal(Network.load(self.path).predict(X), net.predict(X))

    def test_a_batch_through_the_last_layer_over_the_budget_is_refused(self):
        # Dense(4, 1000) holds 40 KB, and its output for a batch of 128 takes 512 KB more.
        net = Network([Dense(4, 1000, seed=0)], loss="mse")
        net.predict(np.ones((1, 4)))
        net.save(self.path)
        with mock.patch.object(nn, "MAX_MODEL_BYTES", 120_000):
            message = self.assertRefused(fragment="its layers, with a batch of 128 examples, "
                                                  "would take more than nn.MAX_MODEL_BYTES")
        self.assertIn("is a model larger than nn loads", message)

    def test_an_input_shape_the_first_layer_cannot_take_is_refused(self):
        arrays = self.good_arrays()
        text = str(arrays["architecture"]).replace('"input_shape": [5]', '"input_shape": [7]')
        self.assertRefused(arrays=dict(arrays, architecture=np.array(text)),
                           fragment="layer 0 (Dense(5, 16)) cannot take an example of shape (7,)")

    def test_missing_file(self):
        with self.assertRaises(FileNotFoundError):
            Network.load(os.path.join(self.folder.name, "absent.npz"))


class TestHostileModelFiles(SaveLoadCase):
    """Crafted files: each refused with a ValueError, before allocating what they claim."""

    def craft(self, name, header, data):
        """A good model file whose member `name` is a .npy of this header dict and data bytes."""
        arrays = self.good_arrays()
        del arrays[name]
        np.savez(self.path, **arrays)
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header)
        with zipfile.ZipFile(self.path, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name + ".npy", buffer.getvalue() + data)

    def test_damaged_and_inconsistent_files(self):
        self.assertRefused(content=b"hello, this is not a model")
        self.assertRefused(content=b"")
        arrays = self.good_arrays()
        with open(self.path, "rb") as file:
            truncated = file.read()[:200]
        self.assertRefused(content=truncated)
        self.assertRefused(arrays={"weights": np.ones(3)})                 # no architecture
        self.assertRefused(arrays=dict(arrays, architecture=np.array("not json")))
        self.assertRefused(arrays=dict(arrays, layer0_0=np.ones((4, 16), np.float32)),
                           fragment="shape")
        self.assertRefused(arrays={k: v for k, v in arrays.items() if k != "layer2_1"})
        text = str(arrays["architecture"])
        swish = np.array(text.replace("ReLU", "Swish"))
        self.assertRefused(arrays=dict(arrays, architecture=swish), fragment="custom_objects")
        self.assertRefused(arrays=dict(arrays, extra=np.ones(2, np.float32)),
                           fragment="no layer uses")
        self.assertRefused(arrays=dict(arrays, layer0_0=arrays["layer0_0"].astype(np.int64)),
                           fragment="dtype")
        self.assertRefused(arrays=dict(arrays, layer0_1=arrays["layer0_1"].astype(np.float64)),
                           fragment="parameter 1 has shape (16,) and dtype float64, expected "
                                    "(16,) and float32")

    def test_a_zip_that_says_a_member_is_longer_than_it_is_is_refused(self):
        members = {}
        for name, array in self.good_arrays().items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            members[name + ".npy"] = buffer.getvalue()
        with zipfile.ZipFile(self.path, "w") as archive:     # the CRC of what is really there
            for name, data in members.items():
                archive.writestr(name, data[:-8] if name == "layer0_0.npy" else data)
            local = archive.getinfo("layer0_0.npy").header_offset
        with open(self.path, "rb") as file:
            data = bytearray(file.read())
        central = data.index(b"layer0_0.npy", local + 31) - 46
        for at in (local + 22, central + 24):              # its size, in both of the zip's records
            data[at:at + 4] = len(members["layer0_0.npy"]).to_bytes(4, "little")
        self.assertRefused(content=bytes(data), fragment="array 'layer0_0' claims 320 bytes of "
                                                         "data; its member holds 312")

    def test_non_finite_weights(self):
        arrays = self.good_arrays()
        arrays["layer0_0"][1, 2] = np.inf
        self.assertRefused(arrays=arrays, fragment="NaN or infinity")

    def test_an_infinite_running_variance_is_refused(self):
        # BatchNorm divides by sqrt(running_var): inf gives finite (constant) outputs, so only
        # the check of each array as it is read can refuse it.
        net = Network([Dense(4, 3, seed=0), BatchNorm(3)], loss="mse")
        net.predict(np.ones((2, 4)))
        net.save(self.path)
        with np.load(self.path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        arrays["layer1_buffer1"][:] = np.inf
        self.assertRefused(arrays=arrays, fragment="array 'layer1_buffer1' holds NaN or infinity")

    def test_pickled_content_is_refused_not_unpickled(self):
        arrays = self.good_arrays()
        arrays["layer0_0"] = np.array([LeavesATraceWhenUnpickled()], dtype=object)
        UNPICKLED.clear()
        self.assertRefused(arrays=arrays)
        self.assertEqual(UNPICKLED, [], "load unpickled the file's contents")

    def test_a_huge_claimed_array_is_refused_before_reading(self):
        # The header claims 784 x 400,000 float32 weights (1.25 GB); the data is not there.
        header = {"descr": "<f4", "fortran_order": False, "shape": (784, 400_000)}
        self.craft("layer0_0", header, b"\0" * 64)
        self.assertRefused(fragment="array 'layer0_0' claims 1,254,400,000 bytes of data; its "
                                    "member holds 64")

    def test_damaged_headers_and_members_are_refused_naming_the_file(self):
        for text in (b"{", b"(((((", b"'''", b"{'descr': '<f4', 'shape': (((((}\n"):
            with zipfile.ZipFile(self.path, "w") as archive:
                archive.writestr("architecture.npy", b"\x93NUMPY\x01\x00"
                                 + len(text).to_bytes(2, "little") + text)
            message = self.assertRefused(fragment="array 'architecture' has a damaged header")
            self.assertTrue(message.startswith(self.path), message)
        members = {}
        for name, array in self.good_arrays().items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            members[name + ".npy"] = buffer.getvalue()
        for compression in (zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2, zipfile.ZIP_STORED):
            with zipfile.ZipFile(self.path, "w", compression) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            with open(self.path, "rb") as file:
                data = bytearray(file.read())
            if compression == zipfile.ZIP_LZMA:              # damaged LZMA data
                data[100:140] = bytes(40)
            if compression == zipfile.ZIP_STORED:            # the flag of an encrypted member
                for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
                    data[data.index(signature) + offset] |= 1
            message = self.assertRefused(content=bytes(data), fragment="(expected .npy arrays, "
                                         "stored or deflated, not encrypted)")
            self.assertTrue(message.startswith(self.path), message)
        central = data.index(b"PK\x01\x02")             # a zip version Python cannot read
        data[central + 6] = 99
        self.assertRefused(content=bytes(data), fragment="not a NumPy .npz archive, or a "
                                                         "damaged one (zip file version 9.9)")

    def test_a_huge_claimed_layer_is_refused_before_building(self):
        arrays = self.good_arrays()
        description = json.loads(str(arrays["architecture"]))
        description["layers"][0]["config"] = {"n_in": 10 ** 6, "n_out": 10 ** 6}
        arrays["architecture"] = np.array(json.dumps(description))
        self.assertRefused(arrays=arrays, fragment="far beyond")
        # Within the constructor's bounds but not the file's: a Dense(2100, 2100) would take
        # 53 MB to build before its missing weights were found, so it is refused unbuilt.
        import tracemalloc                          # NumPy reports its arrays to tracemalloc
        description["layers"][0]["config"] = {"n_in": 2100, "n_out": 2100}
        arrays["architecture"] = np.array(json.dumps(description))
        tracemalloc.start()
        try:
            self.assertRefused(arrays=arrays)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 5_000_000)

    def test_deeply_nested_or_odd_architectures(self):
        arrays = self.good_arrays()
        for text in ("[" * 100_000, '{"format": "nn.Network v2", "layers": 5}', "[]", "null",
                     '{"format": "nn.Network v2", "loss": "mse", "layers": [{"type": "Dense"}]}'):
            self.assertRefused(arrays=dict(arrays, architecture=np.array(text)))


def run_bounded(script, memory=1 << 30, seconds=60):
    """Run a Python script in a child process with at most `memory` bytes of address space
    and `seconds` of time: a refusal that regressed into allocating fails, it cannot hang or
    swap the machine. Returns (exit status, stdout, stderr)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=seconds, preexec_fn=limit,
                           cwd=os.path.dirname(os.path.abspath(nn.__file__)))
    return child.returncode, child.stdout, child.stderr


def load_each(paths):
    """A script that loads each model file and prints, per file, what load said (one line)."""
    return textwrap.dedent(f"""
        import json, nn
        for path in {paths!r}:
            try:
                nn.Network.load(path)
                print(json.dumps("loaded"))
            except ValueError as error:
                print(json.dumps(str(error)))
    """)


@unittest.skipUnless(sys.platform.startswith("linux"), "resource limits as on Linux")
class TestModelFileBounds(SaveLoadCase):
    """Small files whose architecture implies huge sizes: refused before anything is built or
    computed, each in a child process that may use at most 1 GiB and one minute."""

    def model_file(self, name, layers, input_shape, arrays=(), fmt=nn.MODEL_FORMAT):
        path = os.path.join(self.folder.name, name)
        description = {"format": fmt, "loss": "mse", "input_shape": input_shape,
                       "layers": [{"type": kind, "config": config} for kind, config in layers]}
        np.savez(path, architecture=np.array(json.dumps(description)), **dict(arrays))
        return path

    def conv(self, i, kernel_size, padding=0, channels=(1, 1)):
        size = min(kernel_size, 64)               # a file may claim more than it holds
        weights = np.zeros(channels[::-1] + (size, size), np.float32)
        return ("Conv2D", {"in_channels": channels[0], "out_channels": channels[1],
                           "kernel_size": kernel_size, "stride": 1, "padding": padding}), \
            {f"layer{i}_0": weights if kernel_size <= 64 else weights[:, :, :1, :1],
             f"layer{i}_1": np.zeros(1, np.float32)}

    def test_crafted_architectures_are_refused_before_building(self):
        cases = {}
        layer, arrays = self.conv(1, 20000)
        cases["kernel_size 20000"] = (self.model_file("k.npz", [("Reshape", {"shape": [1, 28, 28]}),
                                                               layer], [784], arrays),
                                      "cannot be built")
        for padding in (14000, 20000):
            layer, arrays = self.conv(1, 5, padding)
            cases[f"padding {padding}"] = (
                self.model_file(f"p{padding}.npz", [("Reshape", {"shape": [1, 28, 28]}), layer],
                                [784], arrays), "cannot be built")
        layer, arrays = self.conv(1, 64, 63)
        cases["pad to 4000 x 4000, MaxPool2D(4000)"] = (
            self.model_file("pool.npz", [("Reshape", {"shape": [1, 28, 28]}), layer,
                                         ("MaxPool2D", {"size": 4000})], [784], arrays),
            "with a batch of 128 examples, would take more than nn.MAX_MODEL_BYTES")
        growing, arrays = [("Reshape", {"shape": [1, 28, 28]})], {}
        for i in range(1, 150):                   # each pads by 2 and grows the image by 2
            layer, its_arrays = self.conv(i, 3, 2)
            growing.append(layer)
            arrays.update(its_arrays)
        cases["150 layers growing the image"] = (
            self.model_file("grow.npz", growing, [784], arrays), "with a batch of 128 examples")
        # 30 x Conv2D(100, 100, 1) on 32 x 32 images: 1.2 MB of weights, each layer keeping
        # 100 MB for a batch of 128, as 30 x Conv2D(1000, 1000, 1) on 10 x 10 images would.
        layers = [("Reshape", {"shape": [100, 32, 32]})] + [
            ("Conv2D", {"in_channels": 100, "out_channels": 100, "kernel_size": 1})] * 30
        arrays = {f"layer{i}_{j}": np.zeros(shape, np.float32) for i in range(1, 31)
                  for j, shape in enumerate([(100, 100, 1, 1), (100,)])}
        deep = self.model_file("deep.npz", layers, [102_400], arrays)
        cases["30 Conv2D(100, 100, 1) on 32 x 32 images"] = (deep, "a model larger than nn loads")
        # A member whose header claims 47 million float64 numbers (376 MB, which deflate can
        # hold in 365 KB of zeros): loading them would take four times that.
        claimed = os.path.join(self.folder.name, "claimed.npz")
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (47_000_000,)})
        with zipfile.ZipFile(claimed, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("layer0_0.npy", header.getvalue()
                             + np.random.default_rng(0).bytes(365_000))
        with open(claimed, "r+b") as file:       # its real size, in both of the zip's records
            data = bytearray(file.read())
            size = (len(header.getvalue()) + 47_000_000 * 8).to_bytes(4, "little")
            data[22:26] = size
            central = data.index(b"PK\x01\x02")
            data[central + 24:central + 28] = size
            file.seek(0)
            file.write(data)
        cases["376 MB of float64 claimed in 365 KB"] = (claimed, "its arrays, 376,000,128 "
                                                                 "bytes unpacked, held 4 times")
        cases["a huge example"] = (self.model_file("example.npz", [("Flatten", {})],
                                                   [4000, 4000], {}),
                                  "its input_shape [4000, 4000], in a batch of 128, would take")
        cases["an earlier format"] = (self.model_file("v2.npz", [("Flatten", {})], [4], {},
                                                      fmt="nn.Network v2"), "earlier nn.py")
        dense = {"layer0_0": np.full((784, 3), 3e38, np.float32),
                 "layer0_1": np.zeros(3, np.float32)}
        cases["finite weights of 3e38"] = (
            self.model_file("big.npz", [("Dense", {"n_in": 784, "n_out": 3}), ("Softmax", {})],
                            [784], dense), "NaN or infinite")
        paths = [path for path, _ in cases.values()]
        status, output, errors = run_bounded(load_each(paths))
        self.assertEqual(status, 0, errors)
        said = [json.loads(line) for line in output.splitlines()]
        for (case, (path, fragment)), message in zip(cases.items(), said):
            with self.subTest(case):
                self.assertTrue(message.startswith(path), message)
                self.assertIn(fragment, message)
        self.assertLess(max(os.path.getsize(path) for path in paths), 1_300_000)

    def test_a_header_claiming_4_gib_is_refused_within_its_members_size(self):
        path = os.path.join(self.folder.name, "header.npz")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            # format 2.0: a 4-byte header length, here 4 GiB - 16; then 4 MB of spaces
            archive.writestr("architecture.npy", b"\x93NUMPY\x02\x00" + (2**32 - 16).to_bytes(
                4, "little") + b" " * 4_000_000)
        status, output, errors = run_bounded(load_each([path]), memory=1 << 30, seconds=30)
        self.assertEqual(status, 0, errors)
        self.assertIn("array 'architecture' has a damaged header (ValueError); expected a .npy "
                      "header of at most 10,000 bytes", json.loads(output))

    def test_a_saved_model_records_its_example_shape_and_loads(self):
        net = Network([Reshape((1, 6, 6)), Conv2D(1, 2, 3, padding=1, seed=0), MaxPool2D(2),
                       Flatten(), Dense(18, 2, seed=1), Softmax()])
        X = np.random.default_rng(0).random((3, 36)).astype(np.float32)
        net.predict(X)
        net.save(self.path)
        again = Network.load(self.path)
        self.assertEqual(again.input_shape, (36,))
        np.testing.assert_array_equal(again.predict(X), net.predict(X))


# ----------------------------------------------------------------------------------------------
# nn.py as a file: one notebook cell, NumPy only, the chapter's order
# ----------------------------------------------------------------------------------------------

class TestModuleText(unittest.TestCase):
    def test_runs_pasted_into_one_cell_and_prints_nothing(self):
        with open(nn.__file__, encoding="utf-8") as file:
            text = file.read()
        namespace = {"__name__": "__main__"}                # as in a notebook: no __file__
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(compile(text, "<notebook cell>", "exec"), namespace)
        self.assertEqual(output.getvalue(), "")
        self.assertNotIn("__file__", text)
        net = namespace["Network"]([namespace["Dense"](2, 16, seed=0), namespace["ReLU"](),
                                    namespace["Dense"](16, 2, seed=1), namespace["Softmax"]()])
        net.fit(XOR_X, XOR_Y, epochs=300, batch_size=4, optimizer=namespace["SGD"](0.1, 0.9),
                seed=0, verbose=0)
        self.assertEqual(net.evaluate(XOR_X, XOR_Y)[1], 1.0)

    @unittest.skipUnless(hasattr(sys, "stdlib_module_names"),
                         "the list of standard modules needs Python 3.10 or newer")
    def test_imports_only_numpy_and_the_standard_library(self):
        import ast
        with open(nn.__file__, encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                self.assertTrue(top in ("numpy", "nn_parallel")
                                or top in sys.stdlib_module_names, module)
                self.assertNotIn(top, ("ctypes", "mmap", "multiprocessing"))

    def test_nn_parallel_is_imported_only_for_workers(self):
        code = ("import sys, nn; nn.Network([nn.Dense(2, 2), nn.Softmax()]).fit("
                "[[0, 1]], [[1, 0]], verbose=0); print(sorted(m for m in sys.modules "
                "if m.split('.')[0] in ('nn_parallel', 'threadpoolctl', 'mmap', "
                "'multiprocessing')))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, cwd=os.path.dirname(os.path.abspath(nn.__file__)))
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)

    def test_the_chapter_comes_in_the_promised_order_before_the_appendix(self):
        with open(nn.__file__, encoding="utf-8") as file:
            text = file.read()
        names = ["class Layer", "class Dense", "class Activation", "class ReLU", "class Sigmoid",
                 "class Tanh", "class LeakyReLU", "class Softmax", "class Dropout", "class Conv2D",
                 "class MaxPool2D", "class Flatten", "class Reshape", "class BatchNorm",
                 "class RandomShift", "def mse(", "def categorical_crossentropy(",
                 "def binary_crossentropy(", "class Network",
                 "class SGD", "class Adam", "PART II", "def check_gradients"]
        positions = [text.index(name) for name in names]
        self.assertEqual(positions, sorted(positions))

    def test_lines_fit_in_100_columns(self):
        for path in (nn.__file__, __file__, exercises.__file__):
            with open(path, encoding="utf-8") as file:
                long = [number for number, line in enumerate(file, 1) if len(line) > 101]
            self.assertEqual(long, [], path)


def tearDownModule():
    # NN_SHOW_GRADIENT_ERRORS=1 python -m unittest  prints the worst error of each piece.
    if os.environ.get("NN_SHOW_GRADIENT_ERRORS"):
        print("\nWorst relative gradient errors:")
        for piece, error in sorted(WORST_ERRORS.items()):
            print(f"  {piece:60s} {error:.1e}")
        if hasattr(TestAdam, "worst"):
            print(f"  Adam against the formula, largest weight difference: {TestAdam.worst:.1e}")


if __name__ == "__main__":
    unittest.main()

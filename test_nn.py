"""Tests for nn.py: finite-difference gradient checks of every piece, and behaviour tests.

Run with:  python -m unittest -v
"""

import contextlib
import io
import os
import tempfile
import unittest
import warnings
from unittest import mock

import numpy as np

import nn
from nn import (SGD, Dense, Network, ReLU, Sigmoid, Softmax, categorical_crossentropy,
                categorical_crossentropy_prime, mse, mse_prime, one_hot)

GRADIENT_TOLERANCE = 1e-6        # relative error allowed between analytic and numerical gradients


def numerical_gradient(f, x, eps=1e-6):
    """Central differences: d f() / d x[i] ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    x is changed in place one element at a time and restored; f must read x afresh each call.
    The error of central differences is O(eps^2), about 1e-12 here, far below the tolerance.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        f_plus = f()
        x[index] = original - eps
        f_minus = f()
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(analytic, numerical):
    """|a - n| / (|a| + |n|) over whole arrays: 0 when equal, 1 when one of them is 0."""
    difference = np.linalg.norm(analytic - numerical)
    scale = np.linalg.norm(analytic) + np.linalg.norm(numerical)
    return difference / scale if scale > 0 else 0.0


WORST_ERRORS = {}                # component -> worst relative error seen, printed at the end


class GradientCheck(unittest.TestCase):
    """Base class holding the one checker every gradient test uses."""

    def assertGradientClose(self, analytic, numerical, component):
        self.assertEqual(analytic.shape, numerical.shape, component)
        error = relative_error(analytic, numerical)
        WORST_ERRORS[component] = max(error, WORST_ERRORS.get(component, 0.0))
        self.assertLess(error, GRADIENT_TOLERANCE,
                        f"{component}: analytic and numerical gradients differ, relative error {error:.2e}")

    def check_layer(self, layer, x, component, rng):
        """Check dL/dx (and every parameter's gradient) for L = sum(forward(x) * G)."""
        upstream = rng.standard_normal(layer.forward(x).shape)     # a random dL/d(output)
        loss = lambda: float(np.sum(layer.forward(x) * upstream))
        layer.forward(x)
        grad_input = layer.backward(upstream)
        self.assertGradientClose(grad_input, numerical_gradient(loss, x), f"{component} input")
        for number, (param, grad) in enumerate(layer.parameters()):
            analytic = grad.copy()
            self.assertGradientClose(analytic, numerical_gradient(loss, param),
                                     f"{component} parameter {number}")


def float64_dense(n_in, n_out, seed, init="he"):
    layer = Dense(n_in, n_out, seed=seed, init=init, dtype=np.float64)
    layer.biases[:] = np.random.default_rng(seed + 100).standard_normal(n_out)  # not all zero
    return layer


class TestGradientChecker(GradientCheck):
    def test_checker_finds_a_wrong_gradient(self):
        # Negative control: a gradient off by 1e-4 relative in one element must be caught,
        # and so must a classic bug, mse_prime without its factor 2.
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 3))
        numerical = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
        wrong = 3 * x ** 2
        wrong[1, 2] *= 1 + 1e-4
        self.assertGreater(relative_error(wrong, numerical), GRADIENT_TOLERANCE)
        y = rng.standard_normal((4, 3))
        half = (x - y) / x.size
        numerical = numerical_gradient(lambda: mse(y, x), x)
        with self.assertRaises(AssertionError):
            self.assertGradientClose(half, numerical, "negative control")
        WORST_ERRORS.pop("negative control", None)

    def test_checker_accepts_a_right_gradient(self):
        x = np.random.default_rng(1).standard_normal((4, 3))
        numerical = numerical_gradient(lambda: float(np.sum(np.sin(x))), x)
        self.assertLess(relative_error(np.cos(x), numerical), 1e-9)


class TestLayerGradients(GradientCheck):
    def test_dense(self):
        rng = np.random.default_rng(0)
        for batch, n_in, n_out in ((1, 3, 2), (5, 4, 3), (7, 6, 10)):
            self.check_layer(float64_dense(n_in, n_out, seed=batch), rng.standard_normal((batch, n_in)),
                             "Dense", rng)

    def test_relu_values_and_slope(self):
        relu = ReLU()
        x = np.array([[-2.0, -0.01, 0.0, 0.01, 3.0]])
        np.testing.assert_array_equal(relu.forward(x), [[0, 0, 0, 0.01, 3.0]])
        np.testing.assert_array_equal(relu.backward(np.full_like(x, 5.0)), [[0, 0, 0, 5.0, 5.0]])

    def test_relu(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((6, 5))
        x[np.abs(x) < 0.1] = 0.5            # away from the kink at 0, where no derivative exists
        self.check_layer(ReLU(), x, "ReLU", rng)

    def test_sigmoid(self):
        rng = np.random.default_rng(2)
        self.check_layer(Sigmoid(), 3 * rng.standard_normal((6, 5)), "Sigmoid", rng)

    def test_softmax(self):
        rng = np.random.default_rng(3)
        self.check_layer(Softmax(), 3 * rng.standard_normal((6, 5)), "Softmax", rng)

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


class TestLossGradients(GradientCheck):
    def setUp(self):
        rng = np.random.default_rng(5)
        self.y_true = one_hot(rng.integers(0, 4, size=6), 4, dtype=np.float64)
        self.y_pred = Softmax().forward(rng.standard_normal((6, 4)))

    def test_mse_prime(self):
        numerical = numerical_gradient(lambda: mse(self.y_true, self.y_pred), self.y_pred)
        self.assertGradientClose(mse_prime(self.y_true, self.y_pred), numerical, "mse_prime")

    def test_categorical_crossentropy_prime(self):
        numerical = numerical_gradient(lambda: categorical_crossentropy(self.y_true, self.y_pred),
                                       self.y_pred)
        self.assertGradientClose(categorical_crossentropy_prime(self.y_true, self.y_pred), numerical,
                                 "categorical_crossentropy_prime")

    def test_loss_values(self):
        y_true = np.array([[0.0, 1.0], [1.0, 0.0]])
        y_pred = np.array([[0.2, 0.8], [0.6, 0.4]])
        self.assertAlmostEqual(mse(y_true, y_pred), (0.04 * 2 + 0.16 * 2) / 4)
        self.assertAlmostEqual(categorical_crossentropy(y_true, y_pred),
                               -(np.log(0.8) + np.log(0.6)) / 2)


class TestSoftmaxWithCrossEntropy(GradientCheck):
    def test_logit_gradient_against_finite_differences(self):
        # Batch of one: Dense's bias gradient is then exactly dL/d(logits).
        rng = np.random.default_rng(6)
        net = Network([float64_dense(3, 5, seed=6), Softmax()])
        x, y = rng.standard_normal((1, 3)), one_hot([2], 5, dtype=np.float64)
        self.assertTrue(net.softmax_crossentropy)
        net.backward(y, net.forward(x))
        biases = net.layers[0].biases
        loss = lambda: categorical_crossentropy(y, net.forward(x))
        self.assertGradientClose(net.layers[0].grad_biases, numerical_gradient(loss, biases),
                                 "softmax + crossentropy")

    def test_combined_equals_the_general_chain_rule(self):
        rng = np.random.default_rng(7)
        z = 2 * rng.standard_normal((8, 6))
        y = one_hot(rng.integers(0, 6, size=8), 6, dtype=np.float64)
        softmax = Softmax()
        p = softmax.forward(z)
        general = softmax.backward(categorical_crossentropy_prime(y, p))
        np.testing.assert_allclose(general, (p - y) / len(y), rtol=1e-10, atol=1e-15)

    def test_confidently_wrong_prediction_keeps_exact_gradient(self):
        # Logits of +-1e4 give probabilities of exactly 0 for the true class. The gradient at
        # the logits must still be (p - y) / N: -1/N for the true class, +1/N for the guess.
        for dtype in (np.float32, np.float64):
            dense = Dense(2, 3, dtype=dtype)
            dense.weights[:] = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
            dense.biases[:] = 0
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
    def check_network(self, net, x, y, component):
        net.backward(y, net.forward(x))
        loss = lambda: net.loss(y, net.forward(x))
        for layer_number, layer in enumerate(net.layers):
            for param, grad in layer.parameters():
                self.assertGradientClose(grad.copy(), numerical_gradient(loss, param),
                                         f"{component} (layer {layer_number})")

    def test_relu_softmax_crossentropy(self):
        rng = np.random.default_rng(8)
        net = Network([float64_dense(4, 6, 1), ReLU(), float64_dense(6, 5, 2), ReLU(),
                       float64_dense(5, 3, 3), Softmax()], loss="categorical_crossentropy")
        x, y = rng.standard_normal((7, 4)), one_hot(rng.integers(0, 3, size=7), 3, np.float64)
        self.check_network(net, x, y, "network, crossentropy")

    def test_sigmoid_softmax_mse(self):
        rng = np.random.default_rng(9)
        net = Network([float64_dense(4, 6, 4, "glorot"), Sigmoid(), float64_dense(6, 3, 5, "glorot"),
                       Softmax()], loss="mse")
        x, y = rng.standard_normal((7, 4)), one_hot(rng.integers(0, 3, size=7), 3, np.float64)
        self.check_network(net, x, y, "network, mse")

    def test_sigmoid_output_mse(self):
        rng = np.random.default_rng(10)
        net = Network([float64_dense(3, 4, 6), ReLU(), float64_dense(4, 2, 7), Sigmoid()], loss="mse")
        x, y = rng.standard_normal((5, 3)), rng.random((5, 2))
        self.check_network(net, x, y, "network, sigmoid output")



class TestExtremeInputs(unittest.TestCase):
    """No overflow, invalid-value or underflow trouble, NaN or inf on extreme inputs."""

    def run_strictly(self, function):
        with np.errstate(all="raise"), warnings.catch_warnings():
            warnings.simplefilter("error")
            return function()

    def test_sigmoid(self):
        for dtype in (np.float32, np.float64):
            x = np.array([[-1e4, -100.0, -95.0, -30.0, 0.0, 30.0, 95.0, 1e4]], dtype=dtype)
            sigmoid = Sigmoid()
            out = self.run_strictly(lambda: sigmoid.forward(x))
            grad = self.run_strictly(lambda: sigmoid.backward(np.full_like(x, 0.3)))
            self.assertTrue(np.all(np.isfinite(out)) and np.all(np.isfinite(grad)))
            self.assertEqual(out[0, 0], 0.0)
            self.assertEqual(out[0, -1], 1.0)
            self.assertEqual(out[0, 4], 0.5)
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
            for function in (categorical_crossentropy, categorical_crossentropy_prime, mse, mse_prime):
                value = self.run_strictly(lambda: function(y_true, y_pred))
                self.assertTrue(np.all(np.isfinite(value)), function.__name__)
            self.assertGreater(categorical_crossentropy(y_true, y_pred), 30)
            self.assertEqual(categorical_crossentropy(y_true, y_true), 0.0)

    def test_whole_network_on_extreme_inputs(self):
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(11)
            for hidden in (ReLU(), Sigmoid()):
                net = Network([Dense(4, 8, seed=1, dtype=dtype), hidden,
                               Dense(8, 3, seed=2, dtype=dtype), Softmax()])
                x = (rng.standard_normal((6, 4)) * 1e4).astype(dtype)
                y = one_hot(rng.integers(0, 3, size=6), 3, dtype=dtype)
                p = self.run_strictly(lambda: net.forward(x))
                self.run_strictly(lambda: net.backward(y, p))
                self.assertTrue(np.all(np.isfinite(p)))
                for layer in net.layers:
                    for _, grad in layer.parameters():
                        self.assertTrue(np.all(np.isfinite(grad)))


def xor_network(seed=0):
    return Network([Dense(2, 16, seed=seed), ReLU(), Dense(16, 2, seed=seed + 1), Softmax()])


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = one_hot([0, 1, 1, 0], 2, dtype=np.float64)


def blobs(n=300, seed=0, dtype=np.float32):
    """Three Gaussian clouds in 5 dimensions: a small problem a network can learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = rng.standard_normal((3, 5)) * 3
    X = (centres[labels] + rng.standard_normal((n, 5))).astype(dtype)
    return X, one_hot(labels, 3, dtype=dtype)


def small_network(seed=0, loss="categorical_crossentropy"):
    return Network([Dense(5, 16, seed=seed), ReLU(), Dense(16, 3, seed=seed + 1), Softmax()], loss=loss)


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
        X, Y = blobs(dtype=np.float64)
        net = small_network()
        expected_loss, expected_accuracy = net.evaluate(X, Y)
        history = net.fit(X, Y, epochs=1, batch_size=64, optimizer=SGD(lr=1e-12), verbose=0)
        self.assertAlmostEqual(history["loss"][0], expected_loss, places=9)
        self.assertAlmostEqual(history["accuracy"][0], expected_accuracy)

    def test_last_partial_batch_is_trained(self):
        X, Y = blobs(n=10)
        net = small_network()
        calls = []
        original = net.train_on_batch
        net.train_on_batch = lambda x, y, opt: calls.append(len(x)) or original(x, y, opt)
        net.fit(X, Y, epochs=1, batch_size=4, verbose=0)
        self.assertEqual(calls, [4, 4, 2])

    def test_same_seed_gives_identical_results(self):
        X, Y = blobs()
        runs = []
        for _ in range(2):
            net = small_network(seed=3)
            history = net.fit(X, Y, epochs=3, batch_size=16, optimizer=SGD(lr=0.05, momentum=0.9),
                              validation_data=(X, Y), seed=7, verbose=0)
            runs.append((history, [param.copy() for layer in net.layers for param, _ in layer.parameters()]))
        self.assertEqual(runs[0][0], runs[1][0])
        for a, b in zip(runs[0][1], runs[1][1]):
            np.testing.assert_array_equal(a, b)

    def test_different_shuffling_seed_gives_different_results(self):
        X, Y = blobs()
        histories = [small_network(seed=3).fit(X, Y, epochs=2, batch_size=16, seed=seed, verbose=0)
                     for seed in (1, 2)]
        self.assertNotEqual(histories[0], histories[1])

    def test_float32_trains_in_float32_and_float64_in_float64(self):
        for dtype in (np.float32, np.float64):
            X, Y = blobs(dtype=dtype)
            net = small_network()
            seen = []
            original = Dense.backward

            def spy(layer, grad_output, need_input_grad=True):
                seen.append(grad_output.dtype)
                return original(layer, grad_output, need_input_grad)

            with mock.patch.object(Dense, "backward", spy):
                net.fit(X, Y, epochs=1, batch_size=64, optimizer=SGD(lr=0.01, momentum=0.9), verbose=0)
            self.assertEqual(set(seen), {np.dtype(dtype)})
            for layer in net.layers:
                for param, grad in layer.parameters():
                    self.assertEqual((param.dtype, grad.dtype), (dtype, dtype))
            self.assertEqual(net.predict(X).dtype, dtype)

    def test_integer_pixels_are_accepted_as_float32(self):
        X, Y = blobs()
        net = small_network()
        net.fit(np.round(X * 10).astype(np.int64), Y, epochs=1, verbose=0)
        self.assertEqual(net.layers[0].weights.dtype, np.float32)

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
            small_network().fit(X[:200], Y[:200], epochs=2, validation_data=(X[200:], Y[200:]), verbose=1)
        lines = output.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        pattern = (r"^Epoch 2/2 - \d+\.\ds - loss: \d\.\d{4} - accuracy: \d\.\d{4}"
                   r" - val_loss: \d\.\d{4} - val_accuracy: \d\.\d{4}$")
        self.assertRegex(lines[1], pattern)

    def test_verbose_0_prints_nothing(self):
        X, Y = blobs()
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            small_network().fit(X, Y, epochs=2, validation_data=(X, Y), verbose=0)
        self.assertEqual(output.getvalue(), "")

    def test_predict_and_evaluate_in_batches_match_one_batch(self):
        X, Y = blobs(dtype=np.float64)
        net = small_network()
        np.testing.assert_allclose(net.predict(X, batch_size=7), net.forward(X), rtol=1e-12)
        loss, accuracy = net.evaluate(X, Y, batch_size=7)
        self.assertAlmostEqual(loss, net.loss(Y, net.forward(X)))


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

    def test_lr_decay_multiplies_lr_after_each_epoch(self):
        X, Y = blobs()
        optimizer = SGD(lr=0.1, lr_decay=0.5)
        small_network().fit(X, Y, epochs=3, optimizer=optimizer, verbose=0)
        self.assertAlmostEqual(optimizer.lr, 0.1 * 0.5 ** 3)

    def test_fit_packs_parameters_into_one_array_the_layers_still_see(self):
        X, Y = blobs()
        net = small_network()
        before = [param.copy() for layer in net.layers for param, _ in layer.parameters()]
        net.fit(X, Y, epochs=1, verbose=0)
        (flat_params, flat_grads), = net.parameters()
        self.assertEqual(flat_params.size, net.count_params())
        self.assertEqual(flat_params.size, 5 * 16 + 16 + 16 * 3 + 3)
        for layer in net.layers:
            for param, grad in layer.parameters():
                self.assertTrue(np.shares_memory(param, flat_params))
                self.assertTrue(np.shares_memory(grad, flat_grads))
        after = [param for layer in net.layers for param, _ in layer.parameters()]
        self.assertTrue(all(not np.array_equal(a, b) for a, b in zip(before, after)))

    def test_a_replaced_layer_array_is_still_trained(self):
        X, Y = blobs()
        net = small_network()
        net.fit(X, Y, epochs=1, verbose=0)
        dense = net.layers[0]
        dense.weights = dense.weights.copy()              # no longer part of the packed array
        self.assertEqual(len(net.parameters()), 4)        # so the optimizer gets each array
        before = dense.weights.copy()
        net.train_on_batch(X[:32], Y[:32], SGD(lr=0.1))
        self.assertFalse(np.array_equal(before, dense.weights))

    def test_packed_and_unpacked_training_agree_exactly(self):
        X, Y = blobs()
        packed, unpacked = small_network(), small_network()
        optimizer = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
        packed.fit(X, Y, epochs=1, batch_size=len(X), optimizer=SGD(**optimizer), seed=0, verbose=0)
        order = np.random.default_rng(0).permutation(len(X))       # the order fit used
        unpacked.train_on_batch(X[order], Y[order], SGD(**optimizer))
        self.assertEqual(len(unpacked.parameters()), 4)
        for a, b in zip(packed.layers, unpacked.layers):
            for (param_a, _), (param_b, _) in zip(a.parameters(), b.parameters()):
                np.testing.assert_array_equal(param_a, param_b)

    def test_only_the_optimizer_changes_parameters(self):
        X, Y = blobs()
        net = small_network()
        before = [param.copy() for layer in net.layers for param, _ in layer.parameters()]
        net.backward(Y, net.forward(X))
        after = [param for layer in net.layers for param, _ in layer.parameters()]
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


class TestBadInput(unittest.TestCase):
    def assertValueError(self, function, *fragments):
        with self.assertRaises(ValueError) as caught:
            function()
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_wrong_input_width_names_the_layer(self):
        X, Y = blobs()
        net = small_network()
        self.assertValueError(lambda: net.fit(X[:, :4], Y, verbose=0), "Dense(5, 16)", "5", "(300, 4)")
        self.assertValueError(lambda: net.predict(X[:, :4]), "Dense(5, 16)")
        self.assertValueError(lambda: Dense(5, 16).forward(X[:, :4]), "Dense(5, 16)", "(batch, 5)")

    def test_row_counts_differ(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y[:10], verbose=0), "same number of rows",
                              "300", "10")

    def test_targets_wrong_width(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y[:, :2], verbose=0), "(examples, 3)",
                              "one_hot")
        self.assertValueError(lambda: small_network().evaluate(X, Y[:, 0]), "(examples, 3)")

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

    def test_bad_validation_data(self):
        X, Y = blobs()
        self.assertValueError(lambda: small_network().fit(X, Y, validation_data=X, verbose=0), "pair")
        self.assertValueError(lambda: small_network().fit(X, Y, validation_data=(X, Y[:5]), verbose=0),
                              "X_val", "Y_val")

    def test_non_positive_batch_size_and_epochs(self):
        X, Y = blobs()
        for value in (0, -1, 2.5, None):
            self.assertValueError(lambda: small_network().fit(X, Y, batch_size=value, verbose=0),
                                  "batch_size")
            self.assertValueError(lambda: small_network().fit(X, Y, epochs=value, verbose=0), "epochs")

    def test_sgd_hyper_parameters(self):
        self.assertValueError(lambda: SGD(lr=0), "lr", "> 0")
        self.assertValueError(lambda: SGD(lr=-0.1), "lr")
        self.assertValueError(lambda: SGD(lr=float("nan")), "lr")
        self.assertValueError(lambda: SGD(lr="0.1"), "lr")
        self.assertValueError(lambda: SGD(lr=0.1, momentum=-0.5), "momentum", ">= 0")
        self.assertValueError(lambda: SGD(lr=0.1, weight_decay=-1e-4), "weight_decay", ">= 0")
        self.assertValueError(lambda: SGD(lr=0.1, lr_decay=0), "lr_decay")
        self.assertValueError(lambda: SGD(lr=0.1, lr_decay=1.5), "lr_decay")

    def test_unknown_loss_lists_the_known_ones(self):
        self.assertValueError(lambda: Network([Dense(2, 2)], loss="hinge"), "hinge",
                              "categorical_crossentropy", "mse")

    def test_empty_layer_list_and_non_layers(self):
        self.assertValueError(lambda: Network([]), "at least one layer")
        self.assertValueError(lambda: Network([Dense(2, 2), "relu"]), "layer 1", "Layer")
        self.assertValueError(lambda: Network([ReLU()]), "Dense")

    def test_mismatched_layer_sizes(self):
        self.assertValueError(lambda: Network([Dense(4, 8), ReLU(), Dense(6, 2)]), "Dense(6, 2)", "8")

    def test_non_positive_layer_sizes(self):
        for n_in, n_out in ((0, 3), (3, 0), (-2, 3), (2.5, 3)):
            self.assertValueError(lambda: Dense(n_in, n_out), "Dense", "positive")
        self.assertValueError(lambda: Dense(3, 3, init="uniform"), "init", "he", "glorot")

    def test_one_hot_labels(self):
        np.testing.assert_array_equal(one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
        self.assertEqual(one_hot([1], 2).dtype, np.float32)
        self.assertValueError(lambda: one_hot([0, 3], 3), "0..2", "3", "index 1")
        self.assertValueError(lambda: one_hot([-1], 3), "-1")
        self.assertValueError(lambda: one_hot([0.5], 3), "whole numbers")
        self.assertValueError(lambda: one_hot([[0]], 3), "1-D")

    def test_no_bare_asserts_for_user_errors(self):
        with open(nn.__file__, encoding="utf-8") as file:
            self.assertNotIn("assert ", file.read())


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)
    return 0.0


class LeavesATraceWhenUnpickled:
    def __reduce__(self):
        return (record_unpickling, ())


class TestSaveLoad(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.folder.name, "model.npz")

    def tearDown(self):
        self.folder.cleanup()

    def trained(self, hidden=ReLU, loss="categorical_crossentropy"):
        X, Y = blobs()
        net = Network([Dense(5, 16, seed=0), hidden(), Dense(16, 3, seed=1), Softmax()], loss=loss)
        net.fit(X, Y, epochs=2, verbose=0)
        return net, X

    def test_round_trip_gives_identical_predictions(self):
        for hidden, loss in ((ReLU, "categorical_crossentropy"), (Sigmoid, "mse")):
            net, X = self.trained(hidden, loss)
            net.save(self.path)
            again = Network.load(self.path)
            self.assertEqual(repr(again), repr(net))
            self.assertEqual(again.loss_name, loss)
            np.testing.assert_array_equal(again.predict(X), net.predict(X))

    def test_float64_model_round_trip(self):
        X, Y = blobs(dtype=np.float64)
        net = small_network()
        net.fit(X, Y, epochs=1, verbose=0)
        net.save(self.path)
        self.assertEqual(Network.load(self.path).layers[0].weights.dtype, np.float64)

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

    def test_unsaveable_layer_is_refused(self):
        class Custom(ReLU):
            pass
        net = Network([Dense(2, 2), Custom()])
        with self.assertRaises(ValueError):
            net.save(self.path)
        self.assertFalse(os.path.exists(self.path))

    def assertRefused(self, content=None, arrays=None):
        if content is not None:
            with open(self.path, "wb") as file:
                file.write(content)
        if arrays is not None:
            np.savez(self.path, **arrays)
        with self.assertRaises(ValueError) as caught:
            Network.load(self.path)
        self.assertIn("not a model saved by nn", str(caught.exception))

    def good_arrays(self):
        net, _ = self.trained()
        net.save(self.path)
        with np.load(self.path) as stored:
            return {name: stored[name] for name in stored.files}

    def test_bad_files_are_refused(self):
        self.assertRefused(content=b"hello, this is not a model")
        self.assertRefused(content=b"")
        arrays = self.good_arrays()
        with open(self.path, "rb") as file:
            truncated = file.read()[:200]
        self.assertRefused(content=truncated)
        self.assertRefused(arrays={"weights": np.ones(3)})                     # no architecture
        self.assertRefused(arrays=dict(arrays, architecture=np.array("not json")))
        wrong_shape = dict(arrays, layer0_weights=np.ones((4, 16), np.float32))
        self.assertRefused(arrays=wrong_shape)
        missing = {k: v for k, v in arrays.items() if k != "layer2_biases"}
        self.assertRefused(arrays=missing)
        unknown = dict(arrays, architecture=np.array(str(arrays["architecture"]).replace("ReLU", "Tanh")))
        self.assertRefused(arrays=unknown)
        self.assertRefused(arrays=dict(arrays, extra=np.ones(2)))

    def test_pickled_content_is_refused_not_unpickled(self):
        arrays = self.good_arrays()
        arrays["layer0_weights"] = np.array([LeavesATraceWhenUnpickled()], dtype=object)
        UNPICKLED.clear()
        self.assertRefused(arrays=arrays)
        self.assertEqual(UNPICKLED, [], "load unpickled the file's contents")

    def test_missing_file(self):
        with self.assertRaises(FileNotFoundError):
            Network.load(os.path.join(self.folder.name, "absent.npz"))


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

    @unittest.skipUnless(hasattr(__import__("sys"), "stdlib_module_names"),
                         "the list of standard modules needs Python 3.10 or newer")
    def test_imports_only_numpy_and_the_standard_library(self):
        import ast
        import sys
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
                self.assertTrue(top == "numpy" or top in sys.stdlib_module_names, module)

    def test_classes_appear_in_the_promised_order(self):
        with open(nn.__file__, encoding="utf-8") as file:
            text = file.read()
        names = ["class Layer", "class Dense", "class Activation", "class ReLU", "class Sigmoid",
                 "class Softmax", "def mse(", "def categorical_crossentropy(", "class Network",
                 "class SGD"]
        positions = [text.index(name) for name in names]
        self.assertEqual(positions, sorted(positions))


def tearDownModule():
    # NN_SHOW_GRADIENT_ERRORS=1 python -m unittest  prints the worst error of each component.
    if os.environ.get("NN_SHOW_GRADIENT_ERRORS"):
        print("\nWorst relative gradient errors:")
        for component, error in sorted(WORST_ERRORS.items()):
            print(f"  {component:45s} {error:.1e}")


if __name__ == "__main__":
    unittest.main()

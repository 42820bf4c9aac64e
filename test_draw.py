"""Tests of Network.input_gradient (checked against finite differences) and of draw.py: the
server, and the page in a real browser (headless Chromium driven by Selenium, skipped and said so
where none is installed)."""

import unittest

import numpy as np

from nn import (BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Network, RandomShift,
                ReLU, Reshape, Softmax, Tanh)


def numerical_input_gradient(net, x, target, eps=1e-6):
    """d P[0, target] / d x by central differences, one input number at a time."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        moved = x.copy()
        moved[i] += eps
        up = net.predict(moved)[0, target]
        moved[i] -= 2 * eps
        grad[i] = (up - net.predict(moved)[0, target]) / (2 * eps)
    return grad


def relative_error(a, b):
    return np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))


class InputGradientTest(unittest.TestCase):
    """Network.input_gradient against central differences, in float64, for an MLP and a CNN
    with every kind of layer that behaves differently in inference."""

    def check(self, net, shape):
        rng = np.random.default_rng(1)
        x = rng.uniform(0, 1, (1,) + shape)
        for target in (0, 3):
            analytic = net.input_gradient(x, target)
            numerical = numerical_input_gradient(net, x, target)
            self.assertEqual(analytic.shape, x.shape)
            self.assertGreater(np.abs(numerical).max(), 1e-3)     # a gradient worth checking
            self.assertLess(relative_error(analytic, numerical), 1e-7)
        # The other class's gradient is a different one: the check above can tell them apart.
        self.assertGreater(relative_error(net.input_gradient(x, 0),
                                          numerical_input_gradient(net, x, 3)), 0.1)

    def test_mlp(self):
        batchnorm = BatchNorm(12, dtype=np.float64)
        batchnorm.running_mean[:] = np.linspace(-0.5, 0.5, 12)
        batchnorm.running_var[:] = np.linspace(0.5, 2, 12)
        net = Network([Reshape((1, 4, 5)), RandomShift(1), Flatten(),
                       Dense(20, 12, seed=0, dtype=np.float64), batchnorm, Tanh(), Dropout(0.5),
                       Dense(12, 4, seed=1, init="glorot", dtype=np.float64), Softmax()])
        self.check(net, (20,))

    def test_cnn(self):
        net = Network([Reshape((1, 8, 8)), Conv2D(1, 3, 3, seed=0, dtype=np.float64),
                       MaxPool2D(2), ReLU(), Flatten(),
                       Dense(27, 4, seed=1, init="glorot", dtype=np.float64), Softmax()])
        net.layers[1].biases[:] = 0.1      # away from ReLU's kink at 0
        self.check(net, (64,))

    def test_one_target_per_row_and_training_untouched(self):
        net = Network([Dense(6, 3, seed=0), Softmax()])
        x = np.random.default_rng(0).uniform(0, 1, (2, 6)).astype(np.float32)
        both = net.input_gradient(x, [2, 0])
        np.testing.assert_allclose(both[0], net.input_gradient(x[:1], 2)[0], rtol=1e-6)
        np.testing.assert_allclose(both[1], net.input_gradient(x[1:], 0)[0], rtol=1e-6)
        self.assertFalse(net.layers[0].input_gradient_needed)   # still skipped when training


if __name__ == "__main__":
    unittest.main()

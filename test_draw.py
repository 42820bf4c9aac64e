"""Tests of Network.input_gradient (checked against finite differences) and of draw.py: the
server, and the page in a real browser (headless Chromium driven by Selenium, skipped and said so
where none is installed)."""

import http.client
import json
import os
import shutil
import socket
import tempfile
import unittest
import urllib.error
import urllib.request

import numpy as np

import draw
from nn import (SGD, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Network,
                RandomShift, ReLU, Reshape, Softmax, Tanh, one_hot)

HERE = os.path.dirname(os.path.abspath(__file__))


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


def post(url, body, query="width=280&height=280"):
    """(status, JSON answer) of POST /predict."""
    request = urllib.request.Request(f"{url}predict?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def a_one(side=280):
    """A drawing of a 1: a dark bar on a white page, as brightness bytes."""
    picture = np.full((side, side), 255, dtype=np.uint8)
    picture[side // 5:side - side // 5, side // 2 - 10:side // 2 + 10] = 0
    return picture.tobytes()


class ServerTest(unittest.TestCase):
    """The server alone, with an untrained network: what it answers, and what it refuses."""

    @classmethod
    def setUpClass(cls):
        net = Network([Dense(784, 16, seed=0), ReLU(), Dense(16, 10, seed=1), Softmax()])
        cls.server, cls.url = draw.serve_in_background(net)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def assertStillServing(self):
        status, answer = post(self.url, a_one())
        self.assertEqual(status, 200)
        self.assertEqual(len(answer["probabilities"]), 10)

    def test_page(self):
        self.assertTrue(self.url.startswith("http://127.0.0.1:"))
        with urllib.request.urlopen(self.url, timeout=30) as response:
            page = response.read().decode()
            self.assertEqual(response.headers["Content-Type"], "text/html; charset=utf-8")
        self.assertIn('id="prediction"', page)
        for outside in ("http://", "https://", "src=", "@import", "url("):   # self-contained
            self.assertNotIn(outside, page)

    def test_prediction(self):
        status, answer = post(self.url, a_one())
        self.assertEqual(status, 200)
        self.assertIn(answer["digit"], range(10))
        self.assertAlmostEqual(sum(answer["probabilities"]), 1, places=4)
        self.assertEqual(answer["digit"], int(np.argmax(answer["probabilities"])))
        seen, why = np.array(answer["seen"]), np.array(answer["why"])
        self.assertEqual((seen.shape, why.shape), ((784,), (784,)))
        self.assertTrue(0 <= seen.min() and seen.max() == 1)
        self.assertEqual(np.abs(why).max(), 1)
        self.assertGreater(np.abs(why).max(), 0)

    def test_a_blank_page_has_no_digit(self):
        status, answer = post(self.url, bytes([255]) * 280 * 280)
        self.assertEqual((status, answer["digit"]), (200, None))
        self.assertIn("no ink", answer["message"])

    def test_only_the_page_and_the_endpoint(self):
        for path in ("/draw.py", "/../nn.py", "/predict", "/index.html"):
            with self.subTest(path=path):
                with self.assertRaises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(self.url.rstrip("/") + path, timeout=30)
                self.assertIn(caught.exception.code, (404, 501))
        request = urllib.request.Request(self.url, data=a_one(), method="PUT")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        self.assertEqual(caught.exception.code, 501)
        self.assertStillServing()

    def test_malformed_bodies(self):
        for query, body, expected in (
                ("width=280&height=280", a_one()[:-1], "bytes of brightness, got 78,399"),
                ("width=3&height=3", b"not an image", "9 bytes"),
                ("width=280", a_one(), "width=W&height=H"),
                ("width=2.5&height=x", a_one(), "whole numbers"),
                ("width=0&height=78400", a_one(), "from 1 to 1000"),
                ("", b"", "width=W&height=H")):
            with self.subTest(query=query):
                status, answer = post(self.url, body, query)
                self.assertEqual(status, 400)
                self.assertIn(expected, answer["error"])
        self.assertStillServing()

    def test_oversized_and_unsized_bodies_are_refused_unread(self):
        host, port = self.server.server_address
        for headers, status in (({"Content-Length": str(draw.MAX_BODY + 1)}, 413),
                                ({"Content-Length": "lots"}, 411),
                                ({"Transfer-Encoding": "chunked"}, 411)):
            with self.subTest(headers=headers):
                connection = http.client.HTTPConnection(host, port, timeout=30)
                connection.putrequest("POST", "/predict?width=1000&height=1000")
                for name, value in headers.items():
                    connection.putheader(name, value)
                connection.endheaders()        # and no body: the answer must not wait for it
                response = connection.getresponse()
                self.assertEqual(response.status, status)
                self.assertIn("error", json.loads(response.read()))
                connection.close()
        self.assertStillServing()

    def test_a_silent_client_does_not_hold_the_others(self):
        silent = socket.create_connection(self.server.server_address, timeout=30)
        try:
            silent.sendall(b"POST /predict?width=280&height=280 HTTP/1.1\r\nContent-Length: 9")
            self.assertStillServing()        # while the first one waits
        finally:
            silent.close()

    def test_a_silent_client_is_dropped(self):
        net = Network([Dense(784, 10, seed=0), Softmax()])
        saved, draw.TIMEOUT = draw.TIMEOUT, 0.2
        try:
            server, _ = draw.serve_in_background(net)
        finally:
            draw.TIMEOUT = saved
        try:
            silent = socket.create_connection(server.server_address, timeout=30)
            silent.sendall(b"GET / HTTP/1.1\r\n")
            self.assertEqual(silent.recv(100), b"")     # closed by the server, unanswered
            silent.close()
        finally:
            server.shutdown()
            server.server_close()

    def test_a_network_that_does_not_read_digits_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"784 pixels -> 10 digits; this one gives \(3,\)"):
            draw.make_server(Network([Dense(784, 3, seed=0), Softmax()]))


if __name__ == "__main__":
    unittest.main()

"""Tests of Network.input_gradient (checked against finite differences) and of draw.py: the
server, and the page in a real browser (headless Chromium driven by Selenium, skipped and said so
where none is installed)."""

import base64
import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import numpy as np

import draw
from nn import (SGD, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Network,
                RandomShift, ReLU, Reshape, Softmax, Tanh, one_hot, relative_error)

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


def post_headers_only(server, headers):
    """(status, JSON answer) of POST /predict with these headers and no body: an answer that
    waited for the body would never come."""
    connection = http.client.HTTPConnection(*server.server_address, timeout=30)
    try:
        connection.putrequest("POST", "/predict?width=1000&height=1000")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


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
        for headers, status in (({"Content-Length": str(draw.MAX_BODY + 1)}, 413),
                                ({"Content-Length": "lots"}, 411),
                                ({"Transfer-Encoding": "chunked"}, 411)):
            with self.subTest(headers=headers):
                answer = post_headers_only(self.server, headers)
                self.assertEqual(answer[0], status)
                self.assertIn("expected", answer[1]["error"])
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

    def test_the_page_reads_a_copy_of_the_network(self):
        net = Network([Dense(784, 10, seed=0), Softmax()])
        server, url = draw.serve_in_background(net)
        try:
            before = post(url, a_one())[1]["probabilities"]
            net.layers[0].weights[:] = 0            # a notebook cell goes on changing net
            self.assertEqual(post(url, a_one())[1]["probabilities"], before)
        finally:
            server.shutdown()
            server.server_close()

    def test_a_network_that_does_not_read_digits_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"784 pixels -> 10 digits; this one gives \(3,\)"):
            draw.make_server(Network([Dense(784, 3, seed=0), Softmax()]))
        with self.assertRaisesRegex(ValueError, r"probabilities \(outputs >= 0 that add up to 1"):
            draw.make_server(Network([Dense(784, 10, seed=0), Tanh()]))


class CommandLineTest(unittest.TestCase):
    """train_mnist.py --draw: prints the page's address, serves it, and stops quietly on Ctrl-C."""

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="draw-test-")
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)
        self.model = os.path.join(self.folder, "model.npz")
        net = Network([Dense(784, 10, seed=0), Softmax()])
        net.predict(np.zeros((1, 784)))                           # so that it knows its input
        net.save(self.model)
        self.test_rows = os.path.join(self.folder, "test.csv")
        with open(self.test_rows, "w") as rows:                 # 10 blank digits
            rows.writelines(f"{digit}," + ",".join(["0"] * 784) + "\n" for digit in range(10))

    def train_mnist(self, *flags):
        return subprocess.Popen(
            [sys.executable, os.path.join(HERE, "train_mnist.py"), "--load", self.model,
             "--test", self.test_rows, "--quiet", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_serves_until_ctrl_c(self):
        process = self.train_mnist("--draw")
        try:
            line = ""
            while "drawing page" not in line:
                line = process.stdout.readline()
                self.assertTrue(line, "train_mnist.py --draw ended without serving")
            url = re.search(r"http://127\.0\.0\.1:\d+/", line).group()
            status, answer = post(url, a_one())
            self.assertEqual((status, len(answer["probabilities"])), (200, 10))
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        self.assertEqual((process.returncode, err), (0, ""))
        self.assertIn("stopped the drawing page", out)

    def test_a_port_in_use_or_without_draw_is_refused_before_any_work(self):
        import train_mnist                       # its main, in this process
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = str(taken.getsockname()[1])
            for flags, expected in ((["--draw", "--port", port], f"--port {port}: cannot serve"),
                                    (["--port", port], "--port is where --draw serves")):
                with self.subTest(flags=flags):
                    out, err = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        status = train_mnist.main(["--load", self.model, "--test",
                                                   self.test_rows, "--quiet", *flags])
                    self.assertEqual((status, out.getvalue()), (2, ""))   # before the test rows
                    self.assertRegex(err.getvalue(), r"^error: [^\n]+\n$")    # one line
                    self.assertIn(expected, err.getvalue())


# ----------------------------------------------------------------------------------------------
# The page in a real browser
# ----------------------------------------------------------------------------------------------

def arc(cx, cy, rx, ry, start, stop, points=16):
    """Points along an ellipse from angle start to stop (degrees; 0 is right, 90 down)."""
    angles = np.radians(np.linspace(start, stop, points))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles)))


# Each digit as a person draws it, stroke by stroke, in a box 1 wide and 1 high (y down).
STROKES = {
    0: [arc(0.5, 0.5, 0.42, 0.48, -90, 270)],
    1: [[(0.58, 0.0), (0.42, 1.0)]],
    2: [arc(0.5, 0.27, 0.4, 0.26, 195, 380) + [(0.05, 0.97), (0.98, 0.97)]],
    3: [arc(0.5, 0.26, 0.36, 0.24, 200, 450) + arc(0.5, 0.74, 0.42, 0.25, 270, 510)],
    4: [[(0.2, 0.0), (0.08, 0.6), (0.95, 0.6)], [(0.75, 0.05), (0.72, 1.0)]],
    5: [[(0.9, 0.02), (0.22, 0.02), (0.17, 0.47)] + arc(0.5, 0.69, 0.4, 0.29, 230, 510)],
    6: [[(0.75, 0.0), (0.45, 0.15), (0.25, 0.38)] + arc(0.5, 0.72, 0.32, 0.26, 190, -170)],
    7: [[(0.04, 0.03), (0.96, 0.03), (0.42, 1.0)]],
    8: [arc(0.5, 0.25, 0.32, 0.24, 90, 450), arc(0.5, 0.73, 0.38, 0.25, -90, 270)],
    9: [arc(0.5, 0.28, 0.38, 0.26, 0, 360), [(0.88, 0.28), (0.82, 1.0)]],
}
BOX = (90, 45, 100, 190)        # where on the 280 x 280 pad a digit is drawn: left, top, w, h
POINTER_KINDS = ("mouse", "pen", "touch")
SCREENSHOT = os.environ.get("DRAW_SCREENSHOT")   # a PNG file to save the page to, with a 2 drawn:
                                                 # DRAW_SCREENSHOT=docs/draw.png python -m
                                                 # unittest test_draw.BrowserTest


def browser():
    """A headless Chromium driven by Selenium, with a fresh profile, or None (and why)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "Selenium is not installed (pip install selenium)"
    binary, driver = "/usr/bin/chromium", "/usr/bin/chromedriver"
    if not (os.path.exists(binary) and os.path.exists(driver)):
        return None, f"no {binary} and {driver} (apt-get install chromium chromium-driver)"
    profile = tempfile.mkdtemp(prefix="draw-test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(options=options, service=Service(driver))
    except Exception as error:           # Selenium's own errors, or the browser failing to start
        shutil.rmtree(profile, ignore_errors=True)
        return None, f"Chromium did not start: {type(error).__name__}: {error}".strip()
    chrome.profile = profile
    return chrome, None


def small_trained_mlp(rows=12_000, epochs=3):
    """An MLP trained on MNIST's first rows, each moved by up to a pixel (a few seconds)."""
    from mnist_csv import load_mnist_csv
    X, labels = load_mnist_csv(os.path.join(HERE, "data", "mnist_train.csv.gz"), nrows=rows)
    net = Network([Reshape((1, 28, 28)), RandomShift(1), Flatten(), Dense(784, 100, seed=0),
                   ReLU(), Dense(100, 10, seed=1, init="glorot"), Softmax()])
    net.fit(X, one_hot(labels, 10), epochs=epochs, batch_size=64,
            optimizer=SGD(lr=0.1, momentum=0.9), seed=0, verbose=0)
    return net


class BrowserTest(unittest.TestCase):
    """The page in headless Chromium: each digit drawn as pointer strokes, read right."""

    @classmethod
    def setUpClass(cls):
        # The network trains in a thread while the browser starts (in processes of its own).
        pool = concurrent.futures.ThreadPoolExecutor(1)
        training = pool.submit(small_trained_mlp)
        pool.shutdown(wait=False)
        cls.chrome, why = browser()
        if cls.chrome is None:
            raise unittest.SkipTest(f"no browser to test the drawing page in: {why}")
        try:
            cls.server, cls.url = draw.serve_in_background(training.result())
        except BaseException:
            cls.quit_browser()
            raise

    @classmethod
    def quit_browser(cls):
        cls.chrome.quit()
        shutil.rmtree(cls.chrome.profile, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.quit_browser()

    def setUp(self):
        self.chrome.get(self.url)
        self.pad = self.chrome.find_element("id", "pad")

    def draw_strokes(self, strokes, kind):
        """Draw strokes (box coordinates) on the pad with a pointer of that kind, and wait
        for the page to show the answer to the whole drawing."""
        from selenium.webdriver.common.actions.action_builder import ActionBuilder
        from selenium.webdriver.common.actions.pointer_input import PointerInput
        from selenium.webdriver.support.ui import WebDriverWait
        left, top, width, height = BOX
        actions = ActionBuilder(self.chrome, mouse=PointerInput(kind, kind), duration=5)
        for stroke in strokes:
            # Offsets from the pad's centre (Selenium's origin for an element).
            points = [(round(left + x * width - 140), round(top + y * height - 140))
                      for x, y in stroke]
            actions.pointer_action.move_to(self.pad, *points[0]).pointer_down()
            for point in points[1:]:
                actions.pointer_action.move_to(self.pad, *point)
            actions.pointer_action.pointer_up()
        actions.perform()
        WebDriverWait(self.chrome, 30, poll_frequency=0.02).until(lambda chrome: chrome.execute_script(
            "return !busy && document.getElementById('prediction').dataset.version"
            " == String(version)"))

    def shown(self):
        """What the page shows: the answer's text, the bars' probabilities and widths, and
        how many pixels of the 28 x 28 and of the why view are not black."""
        return self.chrome.execute_script("""
            const lit = id => {
              const data = document.getElementById(id).getContext("2d")
                                   .getImageData(0, 0, 28, 28).data;
              let n = 0;
              for (let i = 0; i < data.length; i += 4) n += data[i] + data[i + 1] + data[i + 2] > 0;
              return n;
            };
            const bars = [...document.querySelectorAll(".bar")];
            return {text: document.getElementById("prediction").textContent,
                    probabilities: bars.map(bar => Number(bar.dataset.probability)),
                    widths: bars.map(bar => parseFloat(bar.style.width)),
                    values: [...document.querySelectorAll(".value")].map(v => v.textContent),
                    seen: lit("seen"), why: lit("why")};""")

    def test_each_digit_drawn_is_read(self):
        results = {}
        for digit, strokes in STROKES.items():
            with self.subTest(digit=digit):
                self.chrome.find_element("id", "clear").click()
                self.draw_strokes(strokes, POINTER_KINDS[digit % 3])
                page = self.shown()
                results[digit] = page["text"]
                self.assertEqual(len(page["probabilities"]), 10)
                self.assertAlmostEqual(sum(page["probabilities"]), 1, places=4)
                self.assertAlmostEqual(sum(page["widths"]), 100, places=6)
                self.assertAlmostEqual(sum(float(v.rstrip("%")) for v in page["values"]), 100)
                self.assertGreater(page["seen"], 30)          # a digit's worth of ink
                self.assertGreater(page["why"], 100)
                if SCREENSHOT and digit == 2:
                    self.chrome.save_screenshot(SCREENSHOT)
        right = [digit for digit, text in results.items() if text.startswith(str(digit))]
        print("\ndrawing page, digits drawn -> read: "
              + ", ".join(f"{digit} -> {text}" for digit, text in results.items()))
        self.assertGreaterEqual(len(right), 9, results)

    def drop(self, path, wait_for):
        """Drop the file at path on the page, as a person drags it from their files, and wait
        for the page to show what wait_for (JavaScript) says."""
        from selenium.webdriver.support.ui import WebDriverWait
        with open(path, "rb") as file:
            content = base64.b64encode(file.read()).decode()
        self.chrome.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], arguments[1]));
            document.getElementById("bars").dispatchEvent(new DragEvent("drop",
                {dataTransfer: transfer, bubbles: true, cancelable: true}));""",
                                   content, os.path.basename(path))
        WebDriverWait(self.chrome, 30, poll_frequency=0.02).until(
            lambda chrome: chrome.execute_script(f"return !busy && ({wait_for})"))

    def test_a_dropped_picture_is_prepared_as_predict_prepares_it(self):
        from PIL import Image

        from mnist_csv import load_mnist_csv
        from pictures import read_image
        folder = tempfile.mkdtemp(prefix="draw-test-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        pixels, labels = load_mnist_csv(os.path.join(HERE, "data", "mnist_test.csv.gz"), nrows=1)
        digit = pixels[0].reshape(28, 28)
        ink = Image.fromarray(np.uint8(255 * digit)).resize((300, 300), Image.Resampling.BICUBIC)
        paper = os.path.join(folder, "on paper.png")        # dark ink on a light page
        Image.fromarray(235 - np.uint8(np.asarray(ink) * 0.8)).save(paper)
        drawn = os.path.join(folder, "drawn.png")           # light ink on a see-through page
        Image.merge("LA", (Image.new("L", ink.size, 250), ink)).save(drawn)
        for path in (paper, drawn):
            with self.subTest(picture=os.path.basename(path)):
                self.chrome.find_element("id", "clear").click()
                self.drop(path, "document.getElementById('seen').dataset.drawn")
                page = self.shown()
                self.assertTrue(page["text"].startswith(str(labels[0])), page["text"])
                seen = np.array(self.chrome.execute_script("""
                    const data = document.getElementById("seen").getContext("2d")
                                         .getImageData(0, 0, 28, 28).data;
                    return [...data].filter((value, i) => i % 4 == 0);"""))
                expected = np.round(255 * read_image(path))      # as --predict reads the file
                difference = np.abs(seen - expected)
                if path == paper:                    # the same brightness, the same pixels
                    self.assertLessEqual(difference.max(), 2)
                else:    # the browser rounds brightness over a see-through page to 0..255:
                    self.assertLessEqual(difference.mean(), 2)     # a few edge pixels move
        not_a_picture = os.path.join(folder, "notes.png")
        with open(not_a_picture, "w") as file:
            file.write("not a picture")
        self.drop(not_a_picture, "document.getElementById('message').textContent")
        self.assertEqual(self.chrome.find_element("id", "message").text,
                         "notes.png: not a picture this browser can read")

    def test_the_page_works_on_after_oversized_and_malformed_requests(self):
        self.assertEqual(post_headers_only(self.server, {"Content-Length": "10000000"})[0], 413)
        self.assertEqual(post(self.url, b"\x00" * 10, "width=3&height=3")[0], 400)
        self.draw_strokes(STROKES[7], "mouse")
        self.assertTrue(self.shown()["text"].startswith("7"))

    def test_undo_and_clear(self):
        self.draw_strokes(STROKES[4][:1], "mouse")
        first = self.shown()["text"]
        self.draw_strokes(STROKES[4][1:], "mouse")
        self.assertTrue(self.shown()["text"].startswith("4"))
        self.chrome.find_element("id", "undo").click()
        self.draw_strokes([], "mouse")
        self.assertEqual(self.shown()["text"], first)
        self.chrome.find_element("id", "clear").click()
        self.draw_strokes([], "mouse")
        page = self.shown()
        self.assertEqual((page["text"].strip(), page["seen"], sum(page["widths"])), ("", 0, 0))


if __name__ == "__main__":
    unittest.main()

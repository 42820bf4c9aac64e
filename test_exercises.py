"""Tests for exercises.py: nn.py as a course, graded apart from the learner's code, then trained.

    python -m unittest test_exercises -v
"""

import contextlib
import importlib.util
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

import numpy as np

import exercises
import nn
from nn import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, Reshape, Softmax

COMMAND = [sys.executable, exercises.__file__]
ROOT = os.path.dirname(os.path.abspath(__file__))
QUICK = 10                # seconds an exercise may run in these tests (TIME_LIMIT is for learners)


def loaded(path):
    """A learner's nn.py as a module, as their own notebook would import it."""
    spec = importlib.util.spec_from_file_location("learners_nn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def children(pid):
    """The processes `pid` started that are running (Linux's /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            return [int(child) for child in file.read().split()]
    except OSError:
        return []


def state(pid):
    """A process's state letter (R, S, Z...), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


class CourseCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        with open(nn.__file__, encoding="utf-8") as file:
            cls.source = file.read()
        cls.names = [exercise.name for exercise in exercises.find_exercises(cls.source)]

    def check(self, source, time_limit=QUICK):
        """exercises.check on a folder holding `source` as nn.py: (passed, {name: grade}, the
        path of that nn.py)."""
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write(source)
            output = io.StringIO()
            passed = exercises.check(folder, out=output, time_limit=time_limit)
            self.assertEqual(os.listdir(folder), ["nn.py"])       # no __pycache__, nothing
        rows = [line.split(None, 2) for line in output.getvalue().splitlines()[1:-1]]
        self.assertEqual([name for _, name, _ in rows], self.names)      # the chapter's order
        self.assertEqual(output.getvalue().splitlines()[-1], exercises.summary(
            [(name, grade) for _, name, grade in rows]))
        return passed, {name: grade for _, name, grade in rows}, os.path.join(folder, "nn.py")

    def with_answers(self, answers):
        return exercises.replace_bodies(self.source, answers)


class TestExercises(CourseCase):
    """The stubs are not written, the answer key passes, `new` writes all or nothing."""

    def test_finds_every_exercise_of_the_chapter(self):
        for name in ("Dense.backward", "Activation.backward", "ReLU.derivative",
                     "Softmax.backward", "Conv2D.backward", "MaxPool2D.backward",
                     "BatchNorm.backward", "Dropout.backward", "Network.backward", "mse_prime",
                     "softmax_crossentropy_prime", "SGD.step", "Adam.step"):
            self.assertIn(name, self.names)
        self.assertNotIn("Layer.backward", self.names)          # nothing to write there
        self.assertNotIn("Activation.derivative", self.names)

    def test_fresh_stubs_fail_and_are_all_listed_and_the_answer_key_passes(self):
        with tempfile.TemporaryDirectory() as folder:
            exercises.new(folder)
            with open(os.path.join(folder, "nn.py"), encoding="utf-8") as file:
                stubs = file.read()
            with self.assertRaises(FileExistsError):              # never over a learner's file
                exercises.new(folder)
        passed, grades, _ = self.check(stubs)
        self.assertFalse(passed)
        self.assertEqual(set(grades.values()), {"not written"})
        for answer in ("input.T @ grad_output", "(p - y_true) / len(p)", "1 - self.output ** 2",
                       "self.output * (1 - self.output)", "m / denominator"):
            self.assertNotIn(answer, stubs)
        for private in ("_shifted", "_state_for"):               # hints name public names
            self.assertNotIn(private, "".join(exercises.HINTS.values()))
        passed, grades, _ = self.check(self.source)
        self.assertTrue(passed, grades)
        self.assertEqual(set(grades.values()), {"right"})

    def test_every_layer_is_tried_in_each_layout_and_mode_it_serves(self):
        def tried(name):
            return {(len(shape), training) for _, shape, training in
                    exercises.cases_of(getattr(nn, name))}
        self.assertEqual(tried("BatchNorm"), {(2, True), (4, True), (2, False), (4, False)})
        self.assertEqual(tried("Dropout"), {(2, True), (4, True), (2, False)})
        self.assertTrue(any(arguments.get("stride", 1) > 1 and arguments.get("padding", 0) > 0
                            for arguments, _, _ in exercises.cases_of(nn.Conv2D)))
        for name in ("Dense", "ReLU", "Softmax", "Conv2D", "MaxPool2D", "Flatten", "Reshape",
                     "RandomShift"):
            shapes = {shape for _, shape, _ in exercises.cases_of(getattr(nn, name))}
            self.assertGreaterEqual(len(shapes), 2, name)       # never one shape alone

    def test_the_stubs_still_predict_save_and_check(self):
        with tempfile.TemporaryDirectory() as folder:
            exercises.new(folder)
            stubs = loaded(os.path.join(folder, "nn.py"))
            net = stubs.Network([stubs.Reshape((1, 4, 4)), stubs.Conv2D(1, 2, 3, seed=0),
                                 stubs.ReLU(), stubs.MaxPool2D(), stubs.Flatten(),
                                 stubs.Dense(2, 3, seed=1), stubs.Softmax()])
            X = np.random.default_rng(0).random((5, 16))
            np.testing.assert_allclose(net.predict(X), Network(
                [Reshape((1, 4, 4)), Conv2D(1, 2, 3, seed=0), ReLU(), MaxPool2D(), Flatten(),
                 Dense(2, 3, seed=1), Softmax()]).predict(X), rtol=1e-6)
            net.save(os.path.join(folder, "m.npz"))
            with self.assertRaisesRegex(NotImplementedError, "exercise Dense.backward"):
                stubs.check_gradients(stubs.Dense(3, 2), np.ones((2, 3)), verbose=False)

    def test_new_removes_whole_sentences_and_empty_paragraphs(self):
        stubs = self.with_answers({"Activation.backward": ["pass"],
                                   "Sigmoid.derivative": ["pass"]})
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nn.py")
            with open(path, "w", encoding="utf-8") as file:
                file.write(stubs)
            stubbed = loaded(path)
        activation, sigmoid = stubbed.Activation.__doc__, stubbed.Sigmoid.__doc__
        self.assertNotIn("f'(", activation + sigmoid)
        self.assertNotIn("single term,", activation)       # no sentence cut in two
        self.assertTrue(activation.rstrip().endswith("."), activation)
        self.assertEqual(sigmoid, nn.Sigmoid.__doc__.splitlines()[0])   # a one-line docstring
        self.assertNotIn('\n\n    """\n', stubs)              # no empty paragraph before the end

    def test_new_on_a_full_disk_leaves_nothing_and_can_run_again(self):
        # A file-size limit makes every write past 64 KB fail as a full disk does (EFBIG).
        with tempfile.TemporaryDirectory() as folder:
            course = os.path.join(folder, "course")
            code = ("import resource, signal, sys\n"
                    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                    "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
                    f"import exercises\nsys.exit(exercises.main(['new', {course!r}]))")
            full = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)
            self.assertEqual(full.returncode, 2, full.stderr)
            self.assertIn("nothing was written", full.stderr)
            self.assertNotIn("Traceback", full.stderr)
            self.assertEqual(os.listdir(course), [])               # no nn.py, no temporary
            exercises.new(course)                                  # room again: new just works
            self.assertEqual(os.listdir(course), ["nn.py"])

    def test_the_command_line(self):
        # Through a real process: new, then check's exit status 1. The refusals' status and
        # their one line are main's, run here.
        def main(*arguments):                  # (exit status, printed, said on stderr)
            output, errors = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(errors):
                status = exercises.main(list(arguments))
            return status, output.getvalue(), errors.getvalue()

        with tempfile.TemporaryDirectory() as folder:
            made = subprocess.run(COMMAND + ["new", folder], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)
            self.assertEqual(made.returncode, 0, made.stderr)
            graded = subprocess.run(COMMAND + ["check", folder], cwd=ROOT, capture_output=True,
                                    text=True, timeout=300)
            self.assertEqual(graded.returncode, 1, graded.stderr)
            n = len(self.names)
            self.assertIn(f"0 right, 0 wrong, {n} not written (of {n})", graded.stdout)
            status, _, errors = main("new", folder)
            self.assertEqual(status, 2)
            self.assertIn("exists already", errors)
            self.assertEqual(main("new", os.path.join(folder, "nn.py")), (2, "", (
                f"exercises.py: {os.path.join(folder, 'nn.py')} is a file, not a folder: choose "
                f"another\n")))
            status, output, errors = main("check", os.path.join(folder, "none"))
            self.assertEqual((status, output), (2, ""))
            self.assertIn("does not exist: make it with python exercises.py new", errors)


# The BatchNorm.backward of a learner who wrote it for (batch, features) in training only.
BATCHNORM_2D_TRAINING = [
    "m = len(grad_output)",
    "self.grad_beta[...] = grad_output.sum(axis=0)",
    "self.grad_gamma[...] = (grad_output * self.x_hat).sum(axis=0)",
    "return self.gamma * self.inv_std * (grad_output - self.grad_beta / m",
    "                                    - self.x_hat * self.grad_gamma / m)"]


class TestFeedback(CourseCase):
    """check says what kind of wrong an answer is, never the formula."""

    def test_each_kind_of_mistake_is_named(self):
        mistakes = {
            "Dense.backward": ["self.grad_weights += self.input.T @ grad_output",
                               "self.grad_biases[...] = grad_output.sum(axis=0)",
                               "return grad_output @ self.weights.T"],
            "Conv2D.backward": [   # nn.py's, but the biases' gradient in an array of its own
                "k, s, p = self.kernel_size, self.stride, self.padding",
                "grad = grad_output.transpose(1, 2, 3, 0).reshape(self.out_channels, -1)",
                "kernels = self.weights.reshape(self.out_channels, -1)",
                "np.matmul(grad, self.columns.T, out=self.grad_weights.reshape(self.out_channels,"
                " -1))",
                "self.grad_biases = grad.sum(axis=1)",
                "return col2im(kernels.T @ grad, self.input_shape, k, s, p)"],
            "Reshape.backward": ["return grad_output"],
            "ReLU.derivative": ["(self.output > 0).astype(self.output.dtype)"],
            "Softmax.backward": ["p = self.output",
                                 "row_dot = np.sum(grad_output * p, axis=1, keepdims=True)",
                                 "return (p * (grad_output - row_dot)).T"],
            "softmax_crossentropy_prime": ["return (p - y_true) / p.size"],
            "categorical_crossentropy_prime": ["return -y_true / y_pred"],
            "binary_crossentropy_prime": ["return (y_true - y_pred) / (y_pred * (1 - y_pred) "
                                          "* y_pred.size)"],
            "sigmoid_binary_crossentropy_prime": ["return (p - y_true) / len(p)"],
            "mse_prime": ["return (y_pred - y_true) / y_pred.size"],
            "BatchNorm.backward": BATCHNORM_2D_TRAINING,
            "Network.backward": ["grad = self.loss_prime(Y, P)",
                                 "for layer in reversed(self.layers):",
                                 "    grad = layer.backward(grad)"],
            "Adam.step": ["self.m = state_for(pairs, self.m)",
                          "self.v = state_for(pairs, self.v)",
                          "for (param, grad), m, v in zip(pairs, self.m, self.v):",
                          "    grad = grad + self.weight_decay * param",
                          "    m[...] = self.beta1 * m + (1 - self.beta1) * grad",
                          "    v[...] = self.beta2 * v + (1 - self.beta2) * grad ** 2",
                          "    param -= self.lr * m / (np.sqrt(v) + self.eps)"],
            "SGD.step": ["for param, grad in pairs:",
                         "    param -= self.lr * (grad + self.weight_decay * param)"],
        }
        source = self.with_answers(mistakes)
        passed, grades, path = self.check(source)
        self.assertFalse(passed)
        self.assertEqual({name for name, grade in grades.items() if grade != "right"},
                         set(mistakes))
        said = {name: grades[name] for name in mistakes}
        self.assertIn("self.grad_weights was added to (+=) instead of written over",
                      said["Dense.backward"])
        self.assertIn("self.grad_biases was bound to a new array (self.grad_biases = ...) "
                      "instead of being written into", said["Conv2D.backward"])
        self.assertIn("holds the right numbers in the wrong shape: (3, 3, 4, 4), where (3, 48) "
                      "is expected", said["Reshape.backward"])
        line = source.splitlines().index(
            "        (self.output > 0).astype(self.output.dtype)") + 1
        self.assertIn(f"derivative() is None, not an array of shape (5, 3): is a `return` "
                      f"missing? (the method ends at {path}:{line})", said["ReLU.derivative"])
        self.assertIn("is transposed", said["Softmax.backward"])
        self.assertIn("it has the opposite sign", said["binary_crossentropy_prime"])
        self.assertIn("it is 5 times too large: off by a factor of the batch size N (5)",
                      said["categorical_crossentropy_prime"])
        self.assertIn("it is 3 times too small: off by a factor of the number of outputs (3)",
                      said["softmax_crossentropy_prime"])
        self.assertIn("it is 3 times too large: off by a factor of the number of outputs (3)",
                      said["sigmoid_binary_crossentropy_prime"])
        self.assertIn("it is 2 times too small: off by a factor of 2)", said["mse_prime"])
        self.assertIn("BatchNorm(3) on x of shape (3, 3, 4, 4), training: it raised",
                      said["BatchNorm.backward"])
        self.assertIn("; also wrong on (5, 3), inference; (3, 2, 3, 3), inference; right on "
                      "(5, 3), training)", said["BatchNorm.backward"])
        self.assertIn("layer 0's backward ran", said["Network.backward"])
        self.assertEqual(said["Adam.step"],
                         "wrong (with the defaults: the bias correction is missing)")
        self.assertTrue(said["SGD.step"].startswith("wrong (with momentum=0.5 alone: momentum "
                                                    "is missing"), said["SGD.step"])
        for grade in said.values():                       # no formula in any message
            for formula in ("@", "x_hat *", "/ m", "sqrt", "(p - y", "1 - "):
                self.assertNotIn(formula, grade)

    def test_answers_right_for_one_shape_alone_are_wrong(self):
        _, grades, _ = self.check(self.with_answers({
            "mse_prime": ["return 2 * (y_pred - y_true) / 15"],
            "Dense.backward": ["self.grad_weights[...] = self.input.T @ grad_output",
                               "self.grad_biases[...] = grad_output.sum(axis=0)",
                               "return grad_output @ self.weights.T if len(grad_output) == 5 "
                               "else grad_output[:, :1] * 0"]}))
        self.assertIn("on a batch of shape (4, 6)", grades["mse_prime"])
        self.assertIn("Dense(6, 2) on x of shape (4, 6), training", grades["Dense.backward"])
        self.assertIn("right on (5, 3), training", grades["Dense.backward"])


# Mistakes in four exercises of one course. Each exercise is graded in a process of its own, on
# its own, so one check of the course grades each of them as a course with that mistake alone.
MORE_MISTAKES = {
    # BatchNorm.backward for rows and images, but in training only
    "BatchNorm.backward": [
        "m = grad_output.size // self.n",
        "self.grad_beta[...] = grad_output.sum(axis=self.axes)",
        "self.grad_gamma[...] = (grad_output * self.x_hat).sum(axis=self.axes)",
        "return self.gamma.reshape(self.inv_std.shape) * self.inv_std * (grad_output - "
        "self.grad_beta.reshape(self.inv_std.shape) / m - self.x_hat * "
        "self.grad_gamma.reshape(self.inv_std.shape) / m)"],
    # SGD without weight decay
    "SGD.step": ["self.velocities = state_for(pairs, self.velocities)",
                 "for (param, grad), velocity in zip(pairs, self.velocities):",
                 "    velocity[...] = self.momentum * velocity + grad",
                 "    param -= self.lr * velocity"],
    # Adam whose m and v start again from zero at every step
    "Adam.step": ["self.t += 1",
                  "for param, grad in pairs:",
                  "    grad = grad + self.weight_decay * param",
                  "    m = (1 - self.beta1) * grad",
                  "    v = (1 - self.beta2) * grad ** 2",
                  "    m_hat, v_hat = m / (1 - self.beta1 ** self.t), "
                  "v / (1 - self.beta2 ** self.t)",
                  "    param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)"],
    # Dense.backward writing its weights' gradient transposed, in place
    "Dense.backward": ["self.grad_weights[...] = grad_output.T @ self.input",
                       "self.grad_biases[...] = grad_output.sum(axis=0)",
                       "return grad_output @ self.weights.T"],
}


class TestFeedbackOnOneCourse(CourseCase):
    """More kinds of wrong, read from one check of a course with MORE_MISTAKES."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        course = cls()
        cls.passed, cls.grades, _ = course.check(course.with_answers(MORE_MISTAKES))

    def test_only_the_mistaken_exercises_are_wrong(self):
        self.assertFalse(self.passed)
        self.assertEqual({name for name, grade in self.grades.items() if grade != "right"},
                         set(MORE_MISTAKES))

    def test_batchnorm_written_for_rows_in_training_is_wrong_in_inference(self):
        self.assertIn("BatchNorm(3) on x of shape (5, 3), inference: backward's dL/d(input) is "
                      "wrong", self.grades["BatchNorm.backward"])
        self.assertIn("right on (5, 3), training; (3, 3, 4, 4), training",
                      self.grades["BatchNorm.backward"])

    def test_sgd_without_weight_decay_and_a_velocity_that_does_not_last(self):
        self.assertEqual(self.grades["SGD.step"], "wrong (with weight_decay=0.5 alone: weight "
                                                  "decay is missing (the update is the one "
                                                  "weight_decay=0 gives))")
        self.assertEqual(self.grades["Adam.step"], "wrong (with the defaults: self.m and self.v "
                                                   "must live from one step to the next)")

    def test_a_transposed_gradient_written_in_place_is_named(self):
        self.assertIn("it raised ValueError: could not broadcast input array from shape (4,3) "
                      "into shape (3,4)", self.grades["Dense.backward"])
        self.assertIn(": its axes are in another order (transposed?);",
                      self.grades["Dense.backward"])


class TestApart(CourseCase):
    """Nothing a course does but answer can change a grade, or stop check from finishing."""

    def test_exits_and_patches_of_the_grader_change_nothing(self):
        cheats = "\n".join([
            "import sys as _sys, numpy as _np",
            "_main = _sys.modules['__main__']",
            "_main.grade = lambda *arguments: 'right'",
            "_main.check = lambda *arguments, **options: True",
            "GRADIENT_THRESHOLD = 1e300",
            "_np.linalg.norm = lambda *arguments, **options: 0.0",
            "_np.allclose = lambda *arguments, **options: True", ""])
        wrong = self.with_answers({
            "Dense.backward": ["import sys", "sys.exit(0)"],
            "Tanh.derivative": ["import os", "os._exit(0)"],
            "mse_prime": ["return y_pred * 0"],
            "ReLU.derivative": ["import nn as key",           # the answer key? Their own file
                                "return key.ReLU.derivative(self)"],
            "Sigmoid.derivative": ["import sys",               # a right answer that prints
                                   "print('x' * 10 ** 6, flush=True)",
                                   "print('x' * 10 ** 6, file=sys.stderr, flush=True)",
                                   "return self.output * (1 - self.output)"],
            "LeakyReLU.derivative": ["import os, signal",   # kills what started it, not check
                                     f"if os.getppid() != {os.getpid()}:",
                                     "    os.kill(os.getppid(), signal.SIGKILL)"]})
        passed, grades, _ = self.check(cheats + wrong)
        self.assertFalse(passed)
        self.assertIn("training: it raised SystemExit: 0, at ", grades["Dense.backward"])
        self.assertEqual(grades["Tanh.derivative"], "wrong (its process ended before it "
                                                    "answered (exit status 0): sys.exit or "
                                                    "os._exit?)")
        self.assertIn("is wrong (relative error 1.0e+00)", grades["mse_prime"])
        self.assertIn("RecursionError", grades["ReLU.derivative"])
        self.assertEqual(grades["Sigmoid.derivative"], "right")
        self.assertEqual(grades["LeakyReLU.derivative"], "wrong (its process stopped or ended "
                                                         "check's helper process before it "
                                                         "answered)")
        self.assertEqual(grades["Softmax.backward"], "right")     # the others graded as ever
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write("import sys\nsys.exit(0)\n" + wrong)
            exited = subprocess.run(COMMAND + ["check", folder], cwd=ROOT, capture_output=True,
                                    text=True, timeout=120)
        self.assertEqual(exited.returncode, 2)
        self.assertIn("does not import: SystemExit: 0", exited.stderr)

    def test_a_syntax_error_names_its_line_and_a_latin1_file_is_graded(self):
        broken = self.source.replace("class Dense(Layer):", "class Dense(Layer)", 1)
        line = broken[:broken.index("class Dense(Layer)")].count("\n") + 1
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nn.py")
            with open(path, "w", encoding="utf-8") as file:
                file.write(broken)
            with self.assertRaises(ImportError) as caught:
                exercises.grade_all(folder, QUICK)
            self.assertIn(f"SyntaxError: expected ':' (nn.py, line {line}), at {path}:{line}",
                          str(caught.exception))
            with open(path, "wb") as file:      # as an editor set to Latin-1 saves it
                file.write(b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + self.source.encode())
            _, grades = exercises.grade_all(folder, QUICK)
        self.assertEqual({verdict for _, verdict in grades}, {"right"})

    @unittest.skipUnless(exercises.Apart.FORKS, "the helper is where Python forks")
    def test_a_helper_that_does_not_start_in_time_is_not_blamed_on_the_learner(self):
        start, exercises.HELPER_START = exercises.HELPER_START, 0      # not ready at once
        self.addCleanup(setattr, exercises, "HELPER_START", start)
        started, real = [], exercises.Apart._python

        def python(apart, *arguments, **streams):
            started.append(real(apart, *arguments, **streams))
            return started[-1]
        with mock.patch.object(exercises.Apart, "_python", python):
            with exercises.Apart(nn.__file__, QUICK) as apart:
                with self.assertRaisesRegex(OSError, "check's helper process did not start "
                                                     "within 0 s: run check again"):
                    apart.run({"kind": "import", "cases": []})
                self.assertIsNone(apart.helper)
        self.assertEqual(len(started), 1)
        self.assertIsNotNone(started[0].poll())                 # stopped, not left running

    def test_a_hang_in_an_exercise_or_at_import_is_stopped(self):
        # A process forked by check's helper takes milliseconds: 1 s is time enough. The
        # hang at import is in WhereNothingForks.
        pids = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, pids)
        looping = self.with_answers({      # each writes down its pid, and what it started's
            "Dense.backward": ["import os",
                               f"open({pids!r} + '/loop', 'w').write(str(os.getpid()))",
                               "while True:", "    pass"],
            "Tanh.derivative": ["import subprocess, time",
                                "sleeping = subprocess.Popen(['sleep', '1000'])",
                                f"open({pids!r} + '/sleep', 'w').write(str(sleeping.pid))",
                                "time.sleep(1000)"],
            "ReLU.derivative": ["import subprocess",                      # right, but leaves
                                "left = subprocess.Popen(['sleep', '1000'])",   # this behind
                                f"open({pids!r} + '/left', 'w').write(str(left.pid))",
                                "return (self.output > 0).astype(self.output.dtype)"]})
        started = time.monotonic()
        passed, grades, _ = self.check(looping, time_limit=1)
        self.assertFalse(passed)
        for name in ("Dense.backward", "Tanh.derivative"):
            self.assertEqual(grades[name], "wrong (still running after 1 s, and stopped: an "
                                           "endless loop, or a sleep?)")
        self.assertEqual({name for name, grade in grades.items() if grade != "right"},
                         {"Dense.backward", "Tanh.derivative"})     # the others as ever
        self.assertLess(time.monotonic() - started, 600)
        for name in ("loop", "sleep", "left"):                  # stopped, truly
            with open(os.path.join(pids, name), encoding="ascii") as file:
                self.assertIn(state(int(file.read())), ("gone", "Z"), name)

    def test_ctrl_c_ends_check_with_one_line_and_every_process_it_started(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write(self.with_answers({"Dense.backward": ["while True:", "    pass"]}))
            process = subprocess.Popen(COMMAND + ["check", folder], cwd=ROOT, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(600):   # until check's helper has forked the looping Dense.backward
                time.sleep(0.1)
                helpers = children(process.pid)
                started = helpers + [pid for helper in helpers for pid in children(helper)]
                if len(started) == 2:
                    break
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        self.assertEqual((process.returncode, stderr), (130, "exercises.py: interrupted\n"))
        self.assertEqual(len(started), 2)
        for pid in started:                    # ended (a zombie waits for init to reap it)
            self.assertIn(state(pid), ("gone", "Z"), pid)


class WhereNothingForks(CourseCase):
    """Where check does not fork (Windows, macOS), each task is a new Python, as apart."""

    def setUp(self):
        forks, exercises.Apart.FORKS = exercises.Apart.FORKS, False
        self.addCleanup(setattr, exercises.Apart, "FORKS", forks)

    def test_graded_and_stopped_as_where_it_forks(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nn.py")
            with open(path, "w", encoding="utf-8") as file:
                file.write(self.with_answers({"Tanh.derivative": ["import os", "os._exit(0)"],
                                              "mse_prime": ["import sys", "sys.exit(3)"]}))
            with exercises.Apart(path, QUICK) as apart:
                grades = {exercise.name: exercises.grade(exercise, apart)
                          for exercise in exercises.chapter_exercises() if exercise.name in
                          ("Sigmoid.derivative", "Tanh.derivative", "mse_prime")}
            self.assertEqual(grades["Sigmoid.derivative"], "right")
            self.assertEqual(grades["Tanh.derivative"], "wrong (its process ended before it "
                                                        "answered (exit status 0): sys.exit or "
                                                        "os._exit?)")
            self.assertIn("wrong (it raised SystemExit: 3, at ", grades["mse_prime"])
            self.assertEqual(os.listdir(folder), ["nn.py"])       # no __pycache__
            with open(path, "w", encoding="utf-8") as file:
                file.write("import time\ntime.sleep(1000)\n" + self.source)
            with self.assertRaisesRegex(ImportError, "does not import: still running after 1 s"):
                exercises.check(folder, out=io.StringIO(), time_limit=1)


class TestTrain(CourseCase):
    """train: MNIST with the learner's own nn.py, beside the library's."""

    def train(self, source, *options):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write(source)
            result = subprocess.run(COMMAND + ["train", folder] + list(options), cwd=ROOT,
                                    capture_output=True, text=True, timeout=600)
        return result, os.path.join(folder, "nn.py")

    def train_here(self, source):
        """exercises.train in this process, for what it says before any training starts:
        (its exit status, what it printed, the path of that nn.py)."""
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write(source)
            output = io.StringIO()
            status = exercises.train(folder, [], out=output, time_limit=QUICK)
        return status, output.getvalue(), os.path.join(folder, "nn.py")

    def test_unwritten_and_unfinished_exercises_are_named_and_nothing_trains(self):
        status, printed, path = self.train_here(self.with_answers({
            "SGD.step": ['raise NotImplementedError("exercise SGD.step: not written yet")'],
            "Dense.backward": ['raise NotImplementedError("not written yet")'],
            "Adam.step": ["import os", "os._exit(0)"]}))           # it never returns
        self.assertEqual(status, 1, printed)
        self.assertIn(f"{path} cannot train yet: 2 exercises are not written (Dense.backward, "
                      f"SGD.step); 1 exercise is hanging or exiting (Adam.step)", printed)
        self.assertNotIn("test accuracy", printed)

    def test_flags_that_would_have_both_runs_write_one_file_are_refused(self):
        result, _ = self.train(self.source, "--save", "model.npz")
        self.assertEqual(result.returncode, 2)
        self.assertIn("takes no flag that reads a model or writes a file (--save)", result.stderr)

    def test_it_trains_with_the_learners_updates(self):
        # An SGD.step that moves nothing: the learner's network stays untrained, the library's
        # learns, on the same seed and settings.
        test_rows = os.path.join(tempfile.mkdtemp(), "test.csv")     # MNIST's first 500
        self.addCleanup(shutil.rmtree, os.path.dirname(test_rows))
        np.savetxt(test_rows, np.loadtxt(os.path.join(ROOT, "data", "mnist_test.csv.gz"),
                                         delimiter=",", max_rows=500), fmt="%d", delimiter=",")
        result, path = self.train(self.with_answers({"SGD.step": ["pairs = list(pairs)"]}),
                                  "--limit", "2000", "--epochs", "1", "--val-size", "500",
                                  "--test", test_rows)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("1 exercise is wrong (SGD.step", result.stdout)
        theirs = float(result.stdout.split("test accuracy ")[1].split("%")[0])
        ours = float(result.stdout.split("test accuracy ")[2].split("%")[0])
        self.assertIn(f"% with {path} (yours)\n  (using {os.path.realpath(path)}, not the nn.py "
                      f"beside train_mnist.py)", result.stdout)
        self.assertLess(theirs, 30)
        self.assertGreater(ours, 60)


if __name__ == "__main__":
    unittest.main()

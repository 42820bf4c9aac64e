"""Tests for exercises.py: nn.py as a course, graded.

    python -m unittest test_exercises -v
"""

import io
import os
import subprocess
import sys
import tempfile
import types
import unittest

import numpy as np

import exercises
import nn
from nn import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, Reshape, Softmax


class TestExercises(unittest.TestCase):
    """exercises.py: nn.py as a course. The stubs fail, the answer key passes, and a wrong
    answer of each kind is named."""

    @classmethod
    def setUpClass(cls):
        with open(nn.__file__, encoding="utf-8") as file:
            cls.source = file.read()
        cls.names = [exercise.name for exercise in exercises.find_exercises(cls.source)]

    def check(self, source):
        """exercises.check on a folder holding `source` as nn.py: (passed, {name: grade})."""
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nn.py"), "w", encoding="utf-8") as file:
                file.write(source)
            output = io.StringIO()
            passed = exercises.check(folder, out=output)
        rows = [line.split(None, 2) for line in output.getvalue().splitlines()[1:-1]]
        self.assertEqual([name for _, name, _ in rows], self.names)      # the chapter's order
        return passed, {name: grade for _, name, grade in rows}

    def test_finds_every_exercise_of_the_chapter(self):
        for name in ("Dense.backward", "Activation.backward", "ReLU.derivative",
                     "Softmax.backward", "Conv2D.backward", "MaxPool2D.backward",
                     "Network.backward", "mse_prime", "softmax_crossentropy_prime", "SGD.step",
                     "Adam.step"):
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
        passed, grades = self.check(stubs)
        self.assertFalse(passed)
        self.assertEqual(set(grades.values()), {"not written"})
        for answer in ("input.T @ grad_output", "(p - y_true) / len(p)", "1 - self.output ** 2",
                       "self.output * (1 - self.output)", "m / denominator"):
            self.assertNotIn(answer, stubs)
        passed, grades = self.check(self.source)
        self.assertTrue(passed, grades)
        self.assertEqual(set(grades.values()), {"right"})

    def test_the_stubs_still_predict_save_and_check(self):
        with tempfile.TemporaryDirectory() as folder:
            exercises.new(folder)
            stubs = exercises._import(os.path.join(folder, "nn.py"))
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

    def test_a_wrong_answer_of_each_kind_is_named(self):
        wrong = {   # one wrong answer of each kind; the others stay right
            "Dense.backward": ["self.grad_weights += self.input.T @ grad_output",
                               "self.grad_biases[...] = grad_output.sum(axis=0)",
                               "return grad_output @ self.weights.T"],
            "Tanh.derivative": ["return 1 - self.output"],
            "mse_prime": ["return (y_pred - y_true) / y_pred.size"],
            "SGD.step": ["for param, grad in pairs:", "    param -= self.lr * grad"],
            "Adam.step": ["self.m = nn_state(pairs, self.m)" .replace("nn_state", "_state_for"),
                          "self.v = _state_for(pairs, self.v)",
                          "for (param, grad), m, v in zip(pairs, self.m, self.v):",
                          "    m[...] = self.beta1 * m + (1 - self.beta1) * grad",
                          "    v[...] = self.beta2 * v + (1 - self.beta2) * grad ** 2",
                          "    param -= self.lr * m / (np.sqrt(v) + self.eps)"],
        }
        passed, grades = self.check(exercises.replace_bodies(self.source, wrong))
        self.assertFalse(passed)
        self.assertEqual({name for name, grade in grades.items() if grade != "right"}, set(wrong))
        for name in wrong:
            self.assertTrue(grades[name].startswith("wrong ("), grades[name])
        self.assertIn("never add to it (+=)", grades["Dense.backward"])
        self.assertIn("momentum=0.5, weight_decay=0.5", grades["SGD.step"])    # options on

    def test_the_summary_counts_the_wrong_and_a_raise_says_where(self):
        source = exercises.replace_bodies(self.source, {
            "mse_prime": ["return (y_pred - y_true) / y_pred.size"],
            "Tanh.derivative": ["return 1 / 0"]})
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nn.py")
            with open(path, "w", encoding="utf-8") as file:
                file.write(source)
            output = io.StringIO()
            exercises.check(folder, out=output)
        n = len(self.names)
        self.assertEqual(output.getvalue().splitlines()[-1],
                         f"{n - 2} right, 2 wrong, 0 not written (of {n})")
        line = source.splitlines().index("        return 1 / 0") + 1
        self.assertIn(f"wrong (it raised ZeroDivisionError: division by zero, at {path}:{line})",
                      output.getvalue())

    def test_new_removes_whole_sentences_and_empty_paragraphs(self):
        stubs = exercises.replace_bodies(self.source, {"Activation.backward": ["pass"],
                                                       "Sigmoid.derivative": ["pass"]})
        stubbed = types.ModuleType("stubbed")
        exec(compile(stubs, "stubbed", "exec"), stubbed.__dict__)
        activation, sigmoid = stubbed.Activation.__doc__, stubbed.Sigmoid.__doc__
        self.assertNotIn("f'(", activation + sigmoid)
        self.assertNotIn("single term,", activation)       # no sentence cut in two
        self.assertTrue(activation.rstrip().endswith("."), activation)
        self.assertEqual(sigmoid, nn.Sigmoid.__doc__.splitlines()[0])   # a one-line docstring
        self.assertNotIn('\n\n    """\n', stubs)              # no empty paragraph before the end

    def test_the_command_line(self):
        with tempfile.TemporaryDirectory() as folder:
            run = [sys.executable, exercises.__file__]
            made = subprocess.run(run + ["new", folder], capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual(made.returncode, 0, made.stderr)
            again = subprocess.run(run + ["new", folder], capture_output=True, text=True,
                                   timeout=60)
            self.assertEqual(again.returncode, 2)
            self.assertIn("exists already", again.stderr)
            graded = subprocess.run(run + ["check", folder], capture_output=True, text=True,
                                    timeout=60)
            self.assertEqual(graded.returncode, 1)
            n = len(self.names)
            self.assertIn(f"0 right, 0 wrong, {n} not written (of {n})", graded.stdout)
            missing = subprocess.run(run + ["check", os.path.join(folder, "none")],
                                     capture_output=True, text=True, timeout=60)
            self.assertEqual((missing.returncode, missing.stdout), (2, ""))
            self.assertNotIn("Traceback", missing.stderr)


if __name__ == "__main__":
    unittest.main()

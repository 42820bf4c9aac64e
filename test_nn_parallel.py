"""Tests for nn_parallel.py: fit(workers=N) trains as one process does, keeps the layers'
arrays, reports failures and leaves no process behind; AdaptiveBlasThreads decides as the
load asks (on fake timings) and gives BLAS its threads back.

Run with:  python -m unittest -v test_nn_parallel
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from unittest import mock

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import nn
import nn_parallel
from nn import SGD, Adam, BatchNorm, Dense, Dropout, Layer, Network, ReLU, Softmax, Tanh
from test_nn import Scale, blobs, small_network


class MisbehavesInAHelper(Layer):
    """Passes its input on, but in fit's helper processes it raises or dies ("raise", "die"),
    or fails as a helper starts ("reseed"), or it kills the helper from fit's own process while
    fit validates ("kill")."""

    def __init__(self, how, folder=None):
        self.parent, self.how, self.folder = os.getpid(), how, folder

    def forward(self, x):
        in_helper = os.getpid() != self.parent
        pid_file = os.path.join(self.folder or "", "helper")
        if in_helper and self.how == "raise":
            raise ValueError("a learner's bug")
        if in_helper and self.how == "die":
            os._exit(3)
        if in_helper and self.how == "stop":          # as SIGSTOP from outside would
            if self.folder:
                with open(pid_file, "w") as file:
                    file.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
        if in_helper and self.how == "stall":
            time.sleep(60)
        if in_helper and self.how == "kill":          # leaves its pid for fit's process
            with open(pid_file, "w") as file:
                file.write(str(os.getpid()))
        if not in_helper and self.how == "kill" and not self.training \
                and os.path.exists(pid_file):                 # validating after a step
            with open(pid_file) as file:
                pid = int(file.read())
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)                        # gone before fit's next step begins
            os.remove(pid_file)
        return x

    def backward(self, grad_output):
        return grad_output

    def reseed(self, seed):                           # fit calls it in each helper at start
        if os.getpid() != self.parent and self.how == "reseed":
            raise ValueError("a learner's bug in reseed")


class RebindsItsGradient(Scale):
    """Scale with the mistake the protocol warns of: a new gradient array at every backward."""

    def backward(self, grad_output):
        self.grad_scale = (grad_output * self.input).sum(axis=0)
        return grad_output * self.scale


class Tied(Layer):
    """Uses the weights of a Dense layer, transposed (tied weights, as in an autoencoder)."""

    def __init__(self, dense):
        self.weights, self.grad_weights = dense.weights, np.zeros_like(dense.weights)

    def forward(self, x):
        self.input = x
        return x @ self.weights.T

    def backward(self, grad_output):
        self.grad_weights[...] = grad_output.T @ self.input
        return grad_output @ self.weights

    def parameters(self):
        return [(self.weights, self.grad_weights)]


@unittest.skipUnless(nn.max_workers() >= 2, "fit(workers=2) needs Linux and two cores")
class TestWorkers(unittest.TestCase):
    def assertNoHelpersLeft(self):
        with self.assertRaises(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)

    def train_both_ways(self, make, X, Y, make_optimizer, **options):
        """(history, parameters) of fit with workers=1 and with workers=2."""
        runs = []
        for workers in (1, 2):
            net = make()
            history = net.fit(X, Y, optimizer=make_optimizer(), seed=0, verbose=0,
                              workers=workers, **options)
            runs.append((history, [param.copy() for param, _ in net.parameters()]))
        self.assertNoHelpersLeft()
        return runs

    def assertSameTraining(self, runs):
        (history_1, params_1), (history_2, params_2) = runs
        np.testing.assert_allclose(history_2["loss"], history_1["loss"], rtol=1e-12)
        for one, two in zip(params_1, params_2):
            np.testing.assert_allclose(two, one, rtol=1e-9, atol=1e-12)

    def test_trains_as_one_process_does(self):
        # float64 layers, so only rounding tells them apart (Scale, a learner's float32 layer,
        # is cast to the first layer's float64). Batches of 21 split into parts of 11 and
        # 10, which must be weighted 11/21 and 10/21; 64 examples end with a batch of one,
        # which the helper sits out. Validation and early stopping run in fit's own process.
        X, Y = blobs(n=64)
        f64 = np.float64
        runs = self.train_both_ways(
            lambda: Network([Dense(5, 16, seed=0, dtype=f64), ReLU(), Scale(16),
                             Dense(16, 3, seed=1, dtype=f64), Softmax()]),
            X, Y, lambda: Adam(lr=0.01), epochs=4, batch_size=21,
            validation_data=(X[:20], Y[:20]), patience=3)
        self.assertSameTraining(runs)
        self.assertEqual(runs[1][0]["accuracy"], runs[0][0]["accuracy"])
        np.testing.assert_allclose(runs[1][0]["val_loss"], runs[0][0]["val_loss"], rtol=1e-12)

    def test_batchnorm_keeps_the_running_statistics_of_fits_own_part(self):
        # Each process normalises its part of the batch; the running statistics kept are fit's
        # own process's, learned from the first part of each batch (np.array_split's). 52
        # examples in batches of 12 end with a batch of 4: every part has 2 examples or more.
        X, Y = blobs(n=52)
        net = Network([BatchNorm(5), Dense(5, 3, seed=0), Softmax()])
        net.fit(X, Y, epochs=2, batch_size=12, seed=3, verbose=0, workers=2)
        self.assertNoHelpersLeft()
        expected = BatchNorm(5, dtype=np.float64)
        expected.training = True
        rng = np.random.default_rng(3)                   # fit's order of the examples
        for _ in range(2):
            order = rng.permutation(len(X))
            for first in range(0, len(X), 12):
                expected.forward(X[np.array_split(order[first:first + 12], 2)[0]])
        np.testing.assert_allclose(net.layers[0].running_mean, expected.running_mean, rtol=1e-5)
        np.testing.assert_allclose(net.layers[0].running_var, expected.running_var, rtol=1e-5)


    def test_tied_weights_stay_tied(self):
        X, Y = blobs(n=40, dtype=np.float64)

        def autoencoder():                       # float64: only rounding tells runs apart
            encoder = Dense(5, 3, seed=0, dtype=np.float64)
            return Network([encoder, Tanh(), Tied(encoder)], loss="mse")
        runs = self.train_both_ways(autoencoder, X, X, lambda: SGD(lr=0.05), epochs=2,
                                    batch_size=8)
        self.assertSameTraining(runs)
        for workers in (1, 2):
            net = autoencoder()
            net.fit(X, X, verbose=0, workers=workers)
            self.assertIs(net.layers[2].weights, net.layers[0].weights)
        # Layers of another dtype than the first parameter's are cast to it, once, tied or not.
        encoder = autoencoder().layers[0]
        net = Network([Dense(5, 5, seed=1), encoder, Tanh(), Tied(encoder)], loss="mse")
        net.fit(X, X, verbose=0)
        self.assertIs(net.layers[3].weights, net.layers[1].weights)
        self.assertEqual(net.layers[1].weights.dtype, np.float32)

    def test_three_processes(self):
        # Two cores allow fit only two, so this drives fit's machinery directly.
        X, Y = blobs(n=40, dtype=np.float64)
        rows = np.arange(40)
        results = []
        for workers in (1, 3):
            net = small_network(dtype=np.float64)
            optimizer = SGD(lr=0.1, momentum=0.9)
            with nn._helper_processes(net, X, Y, workers, seed=0) as helpers:
                for first in range(0, 40, 16):      # parts of 6, 5, 5; last batch 3, 3, 2
                    batch = rows[first:first + 16]
                    if helpers:
                        helpers.compute_gradients(batch)
                        optimizer.step(net.parameters())
                    else:
                        net.train_on_batch(X[batch], Y[batch], optimizer)
            results.append([param.copy() for param, _ in net.parameters()])
        for one, three in zip(*results):
            np.testing.assert_allclose(three, one, rtol=1e-9, atol=1e-12)
        self.assertNoHelpersLeft()

    def test_reproducible_and_the_layers_keep_their_arrays(self):
        X, Y = blobs(n=100)
        runs = []
        for _ in range(2):
            net = Network([Dense(5, 16, seed=0), ReLU(), Dropout(0.5), Dense(16, 3, seed=1),
                           Softmax()])
            weights = net.layers[0].weights
            history = net.fit(X, Y, epochs=2, batch_size=10, seed=0, verbose=0, workers=2)
            self.assertIs(net.layers[0].weights, weights)     # no longer in shared memory
            runs.append((history, net.predict(X)))
        self.assertEqual(runs[0][0], runs[1][0])
        np.testing.assert_array_equal(runs[0][1], runs[1][1])
        self.assertNoHelpersLeft()

    def test_a_helper_that_fails_stops_fit_with_a_clear_error(self):
        X, Y = blobs(n=64)
        with tempfile.TemporaryDirectory() as folder:
            for how, message in (("raise", "helper process 1 failed: ValueError: a learner's"),
                                 ("reseed", "helper process 1 failed: ValueError: a learner's"),
                                 ("die", "helper process 1 (pid"),
                                 ("kill", "helper process 1 (pid")):
                net = Network([Dense(5, 16, seed=0), MisbehavesInAHelper(how, folder), ReLU(),
                               Dense(16, 3, seed=1), Softmax()])
                weights = net.layers[0].weights
                with self.assertRaises(RuntimeError) as caught:
                    net.fit(X, Y, epochs=2, batch_size=16, validation_data=(X, Y), verbose=0,
                            workers=2)
                self.assertIn(message, str(caught.exception))
                self.assertIs(net.layers[0].weights, weights)
                self.assertNoHelpersLeft()

    def test_a_helper_that_stops_answering_is_named_and_ended(self):
        X, Y = blobs(n=64)
        for how, message, limits in (
                ("stop", "helper process 1 (pid", {"STOPPED_SECONDS": 1.0}),
                ("stall", "has not answered", {"STALLED_SECONDS": 1.0, "STALLED_FACTOR": 1})):
            net = Network([Dense(5, 16, seed=0), MisbehavesInAHelper(how), ReLU(),
                           Dense(16, 3, seed=1), Softmax()])
            started = time.monotonic()
            with mock.patch.multiple(nn_parallel, **limits), \
                    self.assertRaises(RuntimeError) as caught:
                net.fit(X, Y, epochs=1, batch_size=16, verbose=0, workers=2)
            self.assertIn(message, str(caught.exception))
            self.assertIn("stopped" if how == "stop" else "stalled", str(caught.exception))
            self.assertLess(time.monotonic() - started, 30)
            self.assertNoHelpersLeft()

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "reads process states in /proc")
    def test_no_helper_outlives_fits_process_even_stopped(self):
        # fit's process waits for a stopped helper (told to wait long), and is ended by SIGTERM:
        # the helper, stopped, must end with it.
        with tempfile.TemporaryDirectory() as folder:
            script = textwrap.dedent(f"""
                import nn, nn_parallel, test_nn_parallel as t
                nn_parallel.STOPPED_SECONDS = 600
                net = nn.Network([nn.Dense(5, 16), t.MisbehavesInAHelper("stop", {folder!r}),
                                  nn.Dense(16, 3), nn.Softmax()])
                net.fit(*t.blobs(n=64), batch_size=16, verbose=0, workers=2)
            """)
            child = subprocess.Popen([sys.executable, "-c", script],
                                     cwd=os.path.dirname(os.path.abspath(nn.__file__)))
            pid_file = os.path.join(folder, "helper")
            deadline = time.monotonic() + 60
            while nn_parallel._process_state(self.helper_pid(pid_file)) not in ("T", "t"):
                self.assertLess(time.monotonic(), deadline, "the helper never stopped")
                time.sleep(0.05)
            helper = self.helper_pid(pid_file)
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)
            deadline = time.monotonic() + 10
            while nn_parallel._process_state(helper) not in (None, "Z"):    # gone, or a zombie
                self.assertLess(time.monotonic(), deadline, "the stopped helper outlived fit")
                time.sleep(0.05)

    @staticmethod
    def helper_pid(pid_file):
        try:
            with open(pid_file) as file:
                return int(file.read() or 0)
        except (OSError, ValueError):
            return 0

    def test_layers_that_break_the_protocol_are_refused(self):
        class Hidden(Scale):                                # its gradient only in a dict
            def __init__(self, n):
                super().__init__(n)
                self.grads = {"scale": self.grad_scale}
                del self.grad_scale

            def backward(self, grad_output):
                self.grads["scale"][...] = (grad_output * self.input).sum(axis=0)
                return grad_output * self.scale

            def parameters(self):
                return [(self.scale, self.grads["scale"])]

        class ClipsItsScale(Scale):                         # binds a new parameter array
            def forward(self, x):
                self.scale = np.clip(self.scale, -2, 2)
                return super().forward(x)

        class ListsItTwice(Scale):
            def parameters(self):
                return super().parameters() * 2

        X, Y = blobs(n=64)
        for layers, message in (([Hidden(16)], "self.<name>"),
                                ([RebindsItsGradient(16)], "grad[...] = ..."),
                                ([ClipsItsScale(16)], "bound a new parameter"),
                                ([ListsItTwice(16)], "lists one twice")):
            net = Network([Dense(5, 16, seed=0)] + layers + [Dense(16, 3, seed=1), Softmax()])
            weights = net.layers[0].weights
            with self.assertRaises(ValueError) as caught:
                net.fit(X, Y, verbose=0, workers=2)
            self.assertIn(message, str(caught.exception))
            self.assertIs(net.layers[0].weights, weights)
            self.assertNoHelpersLeft()
        encoder = Dense(5, 3, seed=0)
        net = Network([encoder, Tanh(), Dense(3, 5)], loss="mse")
        net.layers[2].weights = encoder.weights.T            # tied through a view
        net.layers[2].grad_weights = np.zeros_like(net.layers[2].weights)
        with self.assertRaises(ValueError) as caught:
            net.fit(X, X, verbose=0, workers=2)
        self.assertIn("views of one array", str(caught.exception))
        self.assertNoHelpersLeft()

    def test_blas_threads_are_given_back(self):
        def blas_threads():
            return [info["num_threads"] for info in threadpool_info()
                    if info["user_api"] == "blas"]
        if not blas_threads():
            self.skipTest("threadpoolctl finds no BLAS here")
        with threadpool_limits(limits=2, user_api="blas"):
            before = blas_threads()
            small_network().fit(*blobs(n=64), verbose=0, workers=2)
            self.assertEqual(blas_threads(), before)

    def test_says_when_it_cannot_set_blas_threads(self):
        with mock.patch.object(nn_parallel, "threadpool_info", return_value=[]), \
                mock.patch.dict(os.environ, {"OPENBLAS_NUM_THREADS": "", "MKL_NUM_THREADS": ""}):
            with self.assertWarnsRegex(RuntimeWarning, "OPENBLAS_NUM_THREADS=1"):
                small_network().fit(*blobs(n=64), verbose=0, workers=2)

    def test_says_what_to_add_when_nn_parallel_is_missing(self):
        with mock.patch.dict(sys.modules, {"nn_parallel": None}):   # import fails
            with self.assertRaises(ImportError) as caught:
                small_network().fit(*blobs(n=64), verbose=0, workers=2)
        self.assertIn("workers=2 needs nn_parallel.py beside nn.py", str(caught.exception))
        self.assertIn("pip install threadpoolctl", str(caught.exception))
        self.assertNoHelpersLeft()

    def test_works_with_nn_pasted_into_a_notebook_cell(self):
        with open(nn.__file__, encoding="utf-8") as file:
            text = file.read()
        namespace = {"__name__": "__main__"}                # as in a notebook: no __file__
        exec(compile(text, "<notebook cell>", "exec"), namespace)
        X, Y = blobs(n=64)
        net = namespace["Network"]([namespace["Dense"](5, 16, seed=0), namespace["ReLU"](),
                                    namespace["Dense"](16, 3, seed=1), namespace["Softmax"]()])
        history = net.fit(X, Y, epochs=2, batch_size=16, seed=0, verbose=0, workers=2)
        self.assertEqual(len(history["loss"]), 2)
        self.assertNoHelpersLeft()


class FakeMachine:
    """A clock and a threadpoolctl controller for AdaptiveBlasThreads: each training step
    takes cost(step, threads) seconds of a clock that only the steps move."""

    def __init__(self, cost, threads=2):
        self.cost, self.threads, self.now = cost, threads, 0.0
        self.limits = []                     # (time, thread count) each time BLAS is set
        self.steps_on = {}                   # thread count -> steps run with it

    def clock(self):
        return self.now

    # the part of threadpoolctl.ThreadpoolController the policy uses
    def select(self, user_api):
        assert user_api == "blas"
        return self

    def info(self):
        return [{"user_api": "blas", "num_threads": self.threads}]

    def limit(self, limits, user_api):
        machine, original = self, self.threads

        class Limiter:
            def restore_original_limits(self):
                machine.threads = original
        self.threads = limits
        self.limits.append((self.now, limits))
        return Limiter()

    def train(self, policy, steps, batch_size=64):
        """Drive the policy as fit does, for `steps` steps."""
        policy.on_train_begin()
        for step in range(steps):
            policy.on_train_batch_begin(step)
            self.now += self.cost(step, self.threads)
            self.steps_on[self.threads] = self.steps_on.get(self.threads, 0) + 1
            policy.on_train_batch_end(step, {"size": batch_size})
        policy.on_train_end()
        return policy


ALONE = {2: 0.010, 1: 0.015}       # seconds per step: two threads help when alone,
LOADED = {2: 0.170, 1: 0.025}      # and collapse beside other programs


def policy_on(machine, **options):
    return nn_parallel.AdaptiveBlasThreads(clock=machine.clock, controller=machine, **options)


class TestAdaptiveBlasThreads(unittest.TestCase):
    """Its decisions, driven by a fake clock: how long each step takes with each choice."""

    def test_alone_it_keeps_all_threads(self):
        machine = FakeMachine(lambda step, threads: ALONE[threads])
        policy = machine.train(policy_on(machine), 300)
        self.assertEqual(policy.choices, [1, 2])          # one trial each, all threads kept
        self.assertEqual(machine.steps_on[1], 1 + 5)      # a warm-up step, then the trial
        self.assertEqual(machine.threads, 2)              # and BLAS as it was, after fit

    def test_beside_other_programs_it_keeps_one_thread_after_one_collapsed_step(self):
        machine = FakeMachine(lambda step, threads: LOADED[threads])
        policy = machine.train(policy_on(machine, recheck=1e9), 100)
        self.assertEqual(policy.choices, [1, 2, 1])
        self.assertEqual(machine.steps_on[2], 1)          # the trial gave up at once
        self.assertEqual(machine.threads, 2)              # restored when fit ends

    def test_when_a_program_starts_it_moves_to_one_thread_within_a_few_steps(self):
        machine = FakeMachine(lambda step, threads: (ALONE if step < 200 else LOADED)[threads])
        policy = machine.train(policy_on(machine, recheck=1e9), 400)
        self.assertEqual(policy.choices, [1, 2, 1])
        # A warm-up step and 5 of one thread's trial, then 194 steps on two threads until
        # the load comes; three collapsed steps in a row tell.
        self.assertEqual(machine.steps_on[2], 194 + 3)

    def test_when_the_other_program_ends_it_goes_back_to_all_threads(self):
        machine = FakeMachine(lambda step, threads: (LOADED if step < 200 else ALONE)[threads])
        policy = machine.train(policy_on(machine, recheck=1e9), 400)
        self.assertEqual(policy.choices, [1, 2, 1, 2])
        self.assertLess(machine.steps_on[1], 200 + 20 + 5 + 5)  # within one block of 20

    def test_checks_again_less_often_while_the_same_choice_keeps_winning(self):
        machine = FakeMachine(lambda step, threads: ALONE[threads])
        machine.train(policy_on(machine, recheck=1.0, max_recheck=4.0), 2500)   # 25 s
        checks = [time for time, threads in machine.limits if threads == 1]
        gaps = np.diff(checks)            # each: the interval, a check, and up to 20 steps
        np.testing.assert_allclose(gaps, [1, 2, 4, 4, 4, 4, 4], atol=0.4)

    def test_keep_choice_leaves_blas_on_the_choice_kept(self):
        machine = FakeMachine(lambda step, threads: LOADED[threads])
        policy = machine.train(policy_on(machine, keep_choice=True), 4)    # 1 still on trial
        self.assertEqual(machine.threads, 2)     # nothing kept yet: as it was
        machine.train(policy, 100)
        self.assertEqual(machine.threads, 1)

    def test_does_nothing_when_blas_has_one_thread(self):
        machine = FakeMachine(lambda step, threads: LOADED[threads], threads=1)
        policy = machine.train(policy_on(machine), 50)
        self.assertEqual((policy.choices, machine.limits), ([], []))
        self.assertEqual(machine.threads, 1)

    def test_bad_arguments_are_refused_by_name(self):
        for arguments, fragment in (({"trial_steps": 0}, "trial_steps must be a whole number"),
                                    ({"window": 2.5}, "window must be a whole number"),
                                    ({"drift": 1}, "drift must be a number > 1"),
                                    ({"give_up": float("nan")}, "give_up must be a number > 1"),
                                    ({"recheck": "4"}, "recheck must be a number of seconds"),
                                    ({"max_recheck": -1}, "max_recheck must be a number"),
                                    ({"keep_choice": "yes"}, "keep_choice must be True or False"),
                                    ({"clock": 3.0}, "clock must be a function")):
            with self.assertRaises(ValueError) as caught:
                nn_parallel.AdaptiveBlasThreads(**arguments)
            self.assertIn("AdaptiveBlasThreads " + fragment, str(caught.exception))

    @unittest.skipUnless(nn.max_workers() >= 2, "fit(workers=2) needs Linux and two cores")
    def test_with_workers_it_leaves_blas_to_them(self):
        X, Y = blobs(n=100)
        policy = nn_parallel.AdaptiveBlasThreads()
        small_network().fit(X, Y, epochs=1, batch_size=8, verbose=0, workers=2,
                            callbacks=[policy])
        self.assertEqual(policy.choices, [])

    def test_in_fit_it_leaves_blas_as_it_found_it(self):
        X, Y = blobs(n=200)
        before = [pool["num_threads"] for pool in threadpool_info()]
        policy = nn_parallel.AdaptiveBlasThreads()
        small_network().fit(X, Y, epochs=2, batch_size=8, verbose=0, callbacks=[policy])
        self.assertEqual([pool["num_threads"] for pool in threadpool_info()], before)
        if max(before, default=1) > 1:
            self.assertEqual(policy.choices[:2], [1, max(before)])   # both were timed


class TestLoadAwareCallbacks(unittest.TestCase):
    """BLAS threads that follow the load, unless fixed; a note when an epoch slows down."""

    def callbacks(self, workers=1, environment=()):
        variables = {name: value for name, value in os.environ.items()
                     if name not in nn_parallel.THREAD_VARIABLES}
        variables.update(environment)
        said = []
        with mock.patch.dict(os.environ, variables, clear=True):
            callbacks = nn_parallel.load_aware_callbacks(workers, said.append)
        return [type(callback).__name__ for callback in callbacks], callbacks[-1].advice

    def test_adaptive_threads_unless_fixed_or_in_several_processes(self):
        self.assertEqual(self.callbacks()[0], ["AdaptiveBlasThreads", "SlowEpochNote"])
        names, advice = self.callbacks(environment={"OPENBLAS_NUM_THREADS": "2"})
        self.assertEqual(names, ["SlowEpochNote"])
        self.assertIn("OPENBLAS_NUM_THREADS=2 fixes BLAS's threads", advice)
        names, advice = self.callbacks(workers=2)
        self.assertEqual(names, ["SlowEpochNote"])
        self.assertIn("each of the 2 processes needs a free core", advice)

    def test_says_once_when_an_epoch_is_much_slower_than_the_last(self):
        clock, said = [0.0], []
        note = nn_parallel.SlowEpochNote(said.append, "close the other busy programs",
                                         clock=lambda: clock[0])
        for epoch, seconds in enumerate([0.1, 0.9, 1.0, 1.4, 4.2, 9.0], start=1):
            note.on_epoch_begin(epoch)      # 0.9 after 0.1: 9 times, but under a second more
            clock[0] += seconds
            note.on_epoch_end(epoch, {})
        self.assertEqual(said, ["note: epoch 5 took 3.0 times as long as epoch 4: another "
                                "program is probably using the processor; close the other "
                                "busy programs."])

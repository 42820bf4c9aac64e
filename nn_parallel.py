"""nn_parallel: nn.py on more than one core: fit(workers=N), and BLAS threads that follow
the machine's load (fit(callbacks=[AdaptiveBlasThreads()]), near the end of this file, with
load_aware_callbacks, what a training script passes to fit on a shared machine).

nn.py imports this module only when fit is asked for workers > 1; it needs threadpoolctl
(pip install threadpoolctl) to set BLAS's threads.

NumPy's element-wise work (im2col, pooling, activations) runs on one core, and a small CNN's
matrix products are too small for BLAS's threads to pay, so a second core mostly waits.
fit(workers=N) splits every batch into N parts. N - 1 helper processes, forked at the start of
fit with a copy of the network and the data, each run forward and backward on one part while
fit's own process does the first; fit then adds the gradients up, each weighted by its part's
share of the batch (every loss is a mean over the examples, so this is the whole batch's
gradient), and takes the one optimizer step. The parameters live in memory shared by all the
processes, so the helpers see every step at once; so do the helpers' gradients, where fit
reads them. Each process runs BLAS on one thread: N processes, each with BLAS threads on
every core, fight over the cores.

Processes, not threads: two threads share Python's lock (the GIL), and a training step makes
over a hundred NumPy calls, each of which must take it back.

What this asks of a layer, beyond the protocol of nn.Layer:
- It sees a part of each batch, in its own process. A layer that computes statistics over its
  batch gets its part's: BatchNorm normalises each part over itself, as PyTorch's
  DistributedDataParallel does without SyncBatchNorm. What a layer changes besides its
  gradients stays in its process (only parameters are shared): the buffers kept, such as
  BatchNorm's running statistics, are those of fit's own process, learned from the first part
  of every batch; the helpers' go with them. A random layer draws different numbers in each
  process only through reseed(seed), as Dropout does: a seeded fit is reproducible for a
  given N, not across different N.
- It keeps its parameter and gradient arrays as attributes (self.weights, self.grad_weights),
  uses them only through those attributes, and writes into them (param -= ...,
  grad[...] = ...) rather than binding new arrays: fit swaps them for arrays in shared memory.
- It ties weights by holding the same array, not a view of it.
A layer that binds new arrays, or ties through a view, is refused, since its helpers'
gradients or updates would never arrive.

No helper outlives fit's process: each asks Linux to kill it when its parent ends, however
that ends (SIGKILL included). A helper that stops answering is named within seconds: one that
is stopped (SIGSTOP, Ctrl-Z) after STOPPED_SECONDS, one that works on without answering after
STALLED_SECONDS, or STALLED_FACTOR times as long as fit's own process took for its part of
the batch, whichever is longer.
"""

import contextlib
import ctypes
import math
import mmap
import multiprocessing.connection
import os
import select
import signal
import time
import warnings

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

STOPPED_SECONDS = 1.0
STALLED_SECONDS = 60.0
STALLED_FACTOR = 100
PR_SET_PDEATHSIG = 1             # prctl's option: the signal a process gets when its parent ends


@contextlib.contextmanager
def helper_processes(net, X, Y, workers, seed, replace_arrays):
    """fit's helpers (workers > 1); they stop when fit ends, however it ends. replace_arrays is
    nn.replace_arrays, passed by fit (nn.py may be a notebook cell rather than a module)."""
    helpers = Helpers(net, X, Y, workers, seed, replace_arrays)
    failed = True
    try:
        helpers.start()
        yield helpers
        failed = False
    finally:
        helpers.stop(failed)


class Helpers:
    def __init__(self, net, X, Y, workers, seed, replace_arrays):
        self.net, self.X, self.Y, self.workers, self.seed = net, X, Y, workers, seed
        self.replace_arrays = replace_arrays
        self._take_arrays()
        self.connections, self.pids, self.swapped, self.blas_limits = [], [], [], None
        self.pollers = []        # one per helper: waits until its connection has a reply

    def _take_arrays(self):
        """The layers' arrays as they are now, which the layers must keep."""
        self.pairs = [(layer, param, grad) for layer in self.net.layers
                      for param, grad in layer.parameters()]
        self.params = [param for _, param, _ in self.pairs]
        self.grads = [grad for _, _, grad in self.pairs]

    def start(self):
        self._check_arrays()
        # The parameters and gradients move into shared memory (and back, in stop), beside
        # one set of gradients per helper. replace_arrays refuses, before it changes anything,
        # an array that a layer does not keep as an attribute.
        self.swapped = self.replace_arrays(
            [(layer, array) for layer, param, grad in self.pairs for array in (param, grad)],
            _shared_copy)
        self._take_arrays()
        self.helper_grads = [[_shared_like(grad) for grad in self.grads]
                             for _ in range(self.workers - 1)]
        self.blas_limits = threadpool_limits(limits=1, user_api="blas")
        if not any(info.get("user_api") == "blas" for info in threadpool_info()) \
                and "1" not in (os.environ.get("OPENBLAS_NUM_THREADS"),
                                os.environ.get("MKL_NUM_THREADS")):
            warnings.warn("fit(workers=...) found no BLAS to run on one thread per process, "
                          "so the processes may fight over the cores: if workers=1 is faster, "
                          "start Python with OPENBLAS_NUM_THREADS=1 (MKL_NUM_THREADS=1 for MKL)",
                          RuntimeWarning, stacklevel=5)
        parent = os.getpid()
        for k in range(1, self.workers):
            ours, theirs = multiprocessing.connection.Pipe()
            with warnings.catch_warnings():
                # Python 3.12+ warns that forking a process with other threads (a notebook
                # has some) may deadlock the child if one of them holds a lock at that moment;
                # the helper only runs NumPy on one thread and talks through its pipe.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:                             # the helper process
                status = 1
                try:
                    _die_with(parent)
                    ours.close()
                    for connection in self.connections:
                        connection.close()
                    self._serve(k, theirs)
                    status = 0
                finally:
                    os._exit(status)                 # never return into the caller's code
            theirs.close()
            self.connections.append(ours)
            self.pids.append(pid)
            poller = select.poll()       # registered once: cheaper per step than ours.poll()
            poller.register(ours.fileno(), select.POLLIN)
            self.pollers.append(poller)

    def _check_arrays(self):
        """What sharing needs of the layers' arrays, checked before any process starts."""
        grads = [grad for _, _, grad in self.pairs]
        if len({id(grad) for grad in grads}) < len(grads):
            raise ValueError("fit(workers > 1) needs a gradient array of its own for each "
                             "parameter, but parameters() lists one twice")
        params = list({id(param): (layer, param) for layer, param, _ in self.pairs}.values())
        for i, (layer, param) in enumerate(params):
            for other, other_param in params[i + 1:]:
                if np.may_share_memory(param, other_param):
                    raise ValueError(f"{layer!r} and {other!r} hold parameters that are views "
                                     f"of one array; fit(workers > 1) shares whole arrays: "
                                     f"keep the same array in both, and transpose or slice it "
                                     f"where you use it")

    def _serve(self, k, connection):
        """A helper's life: for each message of rows, forward and backward on them, reply with
        the loss and accuracy; exit when fit closes the pipe."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is for fit, which stops us
        trouble = None
        try:
            own = dict(zip(map(id, self.grads), self.helper_grads[k - 1]))
            self.replace_arrays([(layer, grad) for layer, _, grad in self.pairs],
                                lambda grad: own[id(grad)])
            self._take_arrays()
            for i, layer in enumerate(self.net.layers):    # random layers: seeds of their own
                if callable(getattr(layer, "reseed", None)):
                    layer.reseed(None if self.seed is None else [self.seed, i, k])
        except Exception as error:               # told to fit at its first message
            trouble = error
        with np.errstate(over="ignore", invalid="ignore"):
            while True:
                try:
                    rows = np.frombuffer(connection.recv_bytes(), np.int64)
                except EOFError:
                    return
                try:
                    if trouble is not None:
                        raise trouble
                    loss, accuracy = self._gradients(rows)
                    reply = b"ok" + np.array([loss, np.nan if accuracy is None else accuracy],
                                             np.float64).tobytes()
                except Exception as error:
                    reply = f"error:{type(error).__name__}: {error}".encode()
                connection.send_bytes(reply)

    def _gradients(self, rows):
        """compute_gradients on the examples X[rows], into this process's gradient arrays."""
        loss, accuracy = self.net.compute_gradients(self.X.take(rows, axis=0),
                                                    self.Y.take(rows, axis=0))
        now = [pair for layer in self.net.layers for pair in layer.parameters()]
        for (layer, _, _), param, grad, (param_now, grad_now) in zip(self.pairs, self.params,
                                                                     self.grads, now):
            if param_now is not param or grad_now is not grad or len(now) != len(self.pairs):
                raise ValueError(f"{layer!r} bound a new parameter or gradient array instead "
                                 f"of writing into its own (param -= ..., grad[...] = ...), as "
                                 f"the Layer protocol asks and fit(workers > 1) needs")
        return loss, accuracy

    def compute_gradients(self, rows):
        """Network.compute_gradients on X[rows], Y[rows], shared out between the processes."""
        parts = np.array_split(rows, self.workers)      # the first part is the largest
        for k, part in enumerate(parts[1:], start=1):
            if len(part):
                self._send(k, part)
        started = time.monotonic()
        loss, accuracy = self._gradients(parts[0])
        own_seconds = time.monotonic() - started
        share = len(parts[0]) / len(rows)
        loss, accuracy = loss * share, None if accuracy is None else accuracy * share
        for grad in self.grads:
            grad *= share
        for k, part in enumerate(parts[1:], start=1):
            if not len(part):
                continue
            their_loss, their_accuracy = self._receive(k, started, own_seconds)
            share = len(part) / len(rows)
            loss += their_loss * share
            if accuracy is not None:
                accuracy += their_accuracy * share
            for grad, theirs in zip(self.grads, self.helper_grads[k - 1]):
                theirs *= share                  # the helper overwrites it at its next step
                grad += theirs
        return float(loss), None if accuracy is None else float(accuracy)

    def _send(self, k, rows):
        try:
            self.connections[k - 1].send_bytes(rows.astype(np.int64).tobytes())
        except OSError:
            raise self._gone(k) from None

    def _receive(self, k, sent, own_seconds):
        """Helper k's (loss, accuracy), once its gradients are in place; sent at time `sent`,
        a part that took fit's own process `own_seconds`."""
        connection, pid = self.connections[k - 1], self.pids[k - 1]
        patience = max(STALLED_SECONDS, STALLED_FACTOR * own_seconds)
        stopped_since = None
        try:
            while not self.pollers[k - 1].poll(1000 * min(STOPPED_SECONDS, 0.5) / 2):   # ms
                now, state = time.monotonic(), _process_state(pid)
                stopped_since = (stopped_since or now) if state in ("T", "t") else None
                if stopped_since is not None and now - stopped_since >= STOPPED_SECONDS:
                    raise RuntimeError(f"fit's helper process {k} (pid {pid}) is stopped (by "
                                       f"SIGSTOP, Ctrl-Z or a debugger?) and does not answer")
                if now - sent > patience:
                    raise RuntimeError(f"fit's helper process {k} (pid {pid}) has not answered "
                                       f"for {now - sent:.0f} s, where fit's own process took "
                                       f"{own_seconds:.2f} s for its part of the batch: it is "
                                       f"stalled")
            reply = connection.recv_bytes()
        except (EOFError, OSError):
            raise self._gone(k) from None
        if reply.startswith(b"error:"):
            raise RuntimeError(f"fit's helper process {k} failed: {reply[6:].decode()}")
        return np.frombuffer(reply[2:], np.float64)

    def _gone(self, k):
        return RuntimeError(f"fit's helper process {k} (pid {self.pids[k - 1]}) stopped "
                            f"unexpectedly (killed, or out of memory?)")

    def stop(self, failed):
        # The learned values go back into the layers' own arrays first (helpers never write
        # parameters), so that nothing below, not even a second Ctrl-C, can leave the layers
        # on shared memory; and the helpers stop, whatever happens here.
        try:
            for layer, array, shared in self.swapped:
                array[...] = shared
                with contextlib.suppress(ValueError):    # a layer that bound an array of its
                    self.replace_arrays([(layer, shared)], lambda _: array)   # own keeps it
            if self.blas_limits is not None:
                self.blas_limits.restore_original_limits()
        finally:
            for connection in self.connections:  # a helper exits when its pipe closes
                connection.close()
            for pid in self.pids:
                if failed:                       # it may be busy: its work is of no use now
                    _kill(pid)
                _reap(pid)


def _die_with(parent):
    """In a helper: ask Linux to SIGKILL this process when its parent ends (prctl's
    PR_SET_PDEATHSIG), and end now if the parent has already gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):        # not Linux's C library: fit's stop() still kills
        pass
    if os.getppid() != parent:
        os._exit(1)


def _process_state(pid):
    """A process's state letter from /proc (R running, S sleeping, T stopped, Z zombie...),
    or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def _shared_copy(array):
    shared = _shared_like(array)
    shared[...] = array
    return shared


def _shared_like(array):
    """An array of array's shape and dtype in memory that forked processes share (zeros)."""
    memory = mmap.mmap(-1, max(array.nbytes, 1))        # anonymous and shared
    return np.frombuffer(memory, array.dtype, array.size).reshape(array.shape)


def _reap(pid, seconds=5.0):
    """Wait for a helper to exit; kill it if it has not within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            _kill(pid)
            deadline = math.inf
        time.sleep(0.001)


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------------------------
# BLAS threads on a shared machine: fit(callbacks=[AdaptiveBlasThreads()])
# ----------------------------------------------------------------------------------------------

class AdaptiveBlasThreads:
    """A callback for nn's fit: BLAS on whichever is faster now, one thread or all of them,
    checked again as the machine's load changes.

    Alone, BLAS's threads make a matrix product faster on every core. But OpenBLAS's threads
    spin while they wait for each other, so when another program holds a core, every small
    product waits for a thread that is not running, and a run beside other busy programs can
    take many times as long with all threads as with one (benchmarks/bench_shared.py
    measures it).

    It times every training step, in seconds per example (so a short last batch counts alike):
    - At the start (after one warm-up step), `trial_steps` steps with one thread, then as many
      with all; it keeps the faster. A trial step more than `give_up` times slower than the
      other choice ends its trial at once: a collapse costs one step.
    - Then it watches the choice it kept, `window` steps at a time. When a window's median
      step is `drift` times faster than the window before (a program ended), or slower while
      it uses all threads (a program started; three steps in a row `give_up` times slower
      tell at once), it times the other choice again; otherwise after `recheck` seconds, an
      interval that doubles (up to `max_recheck`) each time the kept choice wins again.
    - When fit ends, however it ends, BLAS gets back the threads it had; with
      keep_choice=True it stays on the choice kept last, for a script that goes on to
      predict on the same machine.
    It does nothing when BLAS has one thread (one core, OPENBLAS_NUM_THREADS=1, or
    fit(workers=N > 1), whose processes each run BLAS on one thread).

    After fit, `choices` lists the thread counts it set, in order (e.g. [1, 2, 1]). `clock`
    and `controller` (a threadpoolctl.ThreadpoolController) can be replaced, e.g. by fakes.
    """

    def __init__(self, trial_steps=5, window=20, drift=1.5, give_up=3.0, recheck=4.0,
                 max_recheck=64.0, keep_choice=False, clock=time.perf_counter,
                 controller=None):
        def whole(n):
            return isinstance(n, int) and not isinstance(n, bool) and n >= 1

        def number(x, least):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and least < x < math.inf
        for ok, name, expected, value in (
                (whole(trial_steps), "trial_steps", "a whole number >= 1", trial_steps),
                (whole(window), "window", "a whole number >= 1", window),
                (number(drift, 1), "drift", "a number > 1", drift),
                (number(give_up, 1), "give_up", "a number > 1", give_up),
                (number(recheck, 0), "recheck", "a number of seconds > 0", recheck),
                (number(max_recheck, 0), "max_recheck", "a number of seconds > 0", max_recheck),
                (keep_choice in (True, False), "keep_choice", "True or False", keep_choice),
                (callable(clock), "clock", "a function that returns seconds", clock)):
            if not ok:
                raise ValueError(f"AdaptiveBlasThreads {name} must be {expected}, got {value!r}")
        self.trial_steps, self.window, self.drift = trial_steps, window, drift
        self.give_up, self.recheck, self.max_recheck = give_up, recheck, max_recheck
        self.keep_choice, self.clock, self.controller = keep_choice, clock, controller

    def on_train_begin(self):
        self.controller = self.controller or ThreadpoolController()
        pools = self.controller.select(user_api="blas").info()
        self.all = max((pool["num_threads"] for pool in pools), default=1)
        self.choices, self.seconds = [], {}  # thread count -> seconds per example, latest
        self.threads, self.kept, self.limiter, self.trial = self.all, None, None, None
        self.interval, self.recent, self.skip = self.recheck, [], 1
        if self.all > 1:
            self._try(1)             # the cheap trial first: all threads may collapse

    def on_train_batch_begin(self, batch):
        self.started = self.clock()

    def on_train_batch_end(self, batch, logs):
        seconds = (self.clock() - self.started) / logs["size"]
        if self.all == 1:
            return
        if self.skip:                # the first step (allocations, first calls) says little
            self.skip -= 1
        elif self.trial is not None:
            self._trial_step(seconds)
        else:
            self._watch(seconds)

    def on_train_end(self):
        if self.kept is not None and self.keep_choice:
            self._set(self.kept)         # not a choice still on trial
        elif self.limiter is not None:
            self.limiter.restore_original_limits()

    def _other(self):
        return 1 if self.threads == self.all else self.all

    def _trial_step(self, seconds):
        self.trial.append(seconds)
        rival = self.seconds.get(self._other())      # None in the first trial
        gave_up = rival is not None and seconds > self.give_up * rival
        if len(self.trial) < self.trial_steps and not gave_up:
            return
        self.seconds[self.threads] = float(np.median(self.trial))
        if rival is None:
            self._try(self._other())
            return
        best = min((self.threads, self._other()), key=self.seconds.get)
        self.interval = (min(2 * self.interval, self.max_recheck) if best == self.kept
                         else self.recheck)
        self._set(best)
        self.kept, self.trial, self.recent = best, None, []
        self.next_check = self.clock() + self.interval

    def _watch(self, seconds):
        self.recent.append(seconds)
        before, latest = self.seconds[self.kept], min(self.recent[-3:])
        collapsed = self.kept > 1 and len(self.recent) >= 3 and latest > self.give_up * before
        if len(self.recent) < self.window and not collapsed:
            return
        now = latest if collapsed else float(np.median(self.recent))
        slower, faster = now > self.drift * before, now * self.drift < before
        self.seconds[self.kept], self.recent = now, []
        if collapsed or (slower and self.kept > 1) or faster or self.clock() >= self.next_check:
            self._try(self._other())         # against the kept choice as it runs now

    def _try(self, threads):
        self._set(threads)
        self.trial = []

    def _set(self, threads):
        if threads != self.threads or self.limiter is None:
            limiter = self.controller.limit(limits=threads, user_api="blas")
            self.limiter = self.limiter or limiter   # the first remembers the original
            self.threads = threads
        if not self.choices or self.choices[-1] != threads:
            self.choices.append(threads)


# ----------------------------------------------------------------------------------------------
# A training script's callbacks on a shared machine
# ----------------------------------------------------------------------------------------------

# Variables by which a user fixes BLAS's threads; load_aware_callbacks then leaves them alone.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_aware_callbacks(workers, say):
    """fit's callbacks for a script on a machine other programs may share: in one process,
    BLAS threads that follow the load (AdaptiveBlasThreads, keeping its choice after fit)
    unless the user fixed them; and a note through `say`, with what to do, when an epoch is
    much slower than the last."""
    if workers > 1:
        return [SlowEpochNote(say, f"each of the {workers} processes needs a free core: train "
                                   f"in one, or close the other busy programs")]
    fixed = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    if fixed:
        return [SlowEpochNote(say, f"{fixed[0]} fixes BLAS's threads: unset it to let training "
                                   f"choose them as the load changes, or close the other busy "
                                   f"programs")]
    return [AdaptiveBlasThreads(keep_choice=True),
            SlowEpochNote(say, "training already runs BLAS on as many threads as are fastest "
                               "now, but it shares the cores: close the other busy programs "
                               "(a second notebook, a test run) to get the speed back")]


class SlowEpochNote:
    """A fit callback: when an epoch takes over twice as long as the one before it (and a
    second longer, at least), say so, once, with `advice`: another program has most likely
    taken a core."""

    def __init__(self, say, advice, clock=time.perf_counter):
        self.say, self.advice, self.clock = say, advice, clock
        self.last, self.said = None, False

    def on_epoch_begin(self, epoch):
        self.started = self.clock()

    def on_epoch_end(self, epoch, logs):
        seconds = self.clock() - self.started
        if not self.said and self.last and seconds > max(2 * self.last, self.last + 1):
            self.say(f"note: epoch {epoch} took {seconds / self.last:.1f} times as long as "
                     f"epoch {epoch - 1}: another program is probably using the processor; "
                     f"{self.advice}.")
            self.said = True
        self.last = seconds

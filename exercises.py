"""nn.py as a course: write every gradient and update yourself, be graded, then train it.

    python exercises.py new FOLDER     FOLDER/nn.py: nn.py with the exercises left to write
    python exercises.py check FOLDER   grades FOLDER/nn.py: one line per exercise, in the
                                       chapter's order; exits 0 only when all are right
    python exercises.py train FOLDER   trains MNIST with FOLDER/nn.py and with nn.py side by
                                       side (train_mnist.py, the same seed and settings) and
                                       reports both test accuracies

The exercises are found in nn.py itself: the backward of every layer of the chapter (and of
Network), the derivative of every activation, every loss gradient (the functions named
*_prime, the fused ones included) and the optimizers' step. In FOLDER/nn.py each raises
NotImplementedError, with comments saying what to compute and the shapes; everything else
(forward passes, predict, save and load, check_gradients) works as in nn.py.

check runs your code apart from itself: each exercise in a Python process of its own, with a
time limit, which imports FOLDER/nn.py (and not nn.py, the answer key) and sends back only
numbers: what your code returned and what it left in the gradients. check compares them, in
its own process, with what nn.py gives on the same inputs, so nothing your code does (exit,
hang, print, patch) changes a grade but its answers. Each exercise is tried on inputs of two
shapes or more, in every layout and mode its layer serves (rows and images, training and
inference), and on its own: an activation's backward gets the derivative from check, and
Network.backward runs on layers that report what reaches them. A wrong answer is named by its
kind: the opposite sign, a constant factor (and which), transposed, the right numbers in the
wrong shape, a gradient added to (+=) or bound to a new array instead of written in place, a
missing `return` (with its line); for an optimizer, which part of its rule is missing, each
option tried alone. Right means a relative error below nn.GRADIENT_THRESHOLD, check_gradients'
measure.
"""

import argparse
import ast
import functools
import importlib.util
import inspect
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import traceback

import numpy as np

import nn

METHODS = ("backward", "derivative", "step")     # a class's methods that are exercises
TIME_LIMIT = 30         # seconds one exercise may take in its process (all its inputs together)
LARGEST_ANSWER = 2 ** 24         # bytes of answers an exercise's process may send back
HELPER_START = 120      # seconds check's helper may take to start (it imports NumPy), apart
                        # from any exercise's TIME_LIMIT; check ends, saying so, beyond them

# The layers each exercise is tried on: (the class's arguments, the input's shape, training),
# every layout and mode the layer serves, two shapes at least, so that no answer is right for
# one shape alone. Looked up by the class or its nearest base (ReLU: Activation). A layer of the
# chapter not listed here is tried on rows and on images, as it trains.
CASES = {
    "Dense": [({"n_in": 3, "n_out": 4}, (5, 3), True), ({"n_in": 6, "n_out": 2}, (4, 6), True)],
    "Activation": [({}, (5, 3), True), ({}, (2, 3, 4, 4), True)],
    "LeakyReLU": [({"slope": 0.1}, (5, 3), True), ({"slope": 0.3}, (2, 3, 4, 4), True)],
    "Softmax": [({}, (5, 3), True), ({}, (4, 6), True)],
    "Dropout": [({"rate": 0.5, "seed": 0}, (5, 3), True),
                ({"rate": 0.3, "seed": 1}, (2, 3, 4, 4), True),
                ({"rate": 0.5, "seed": 0}, (5, 3), False)],
    "Conv2D": [({"in_channels": 2, "out_channels": 3, "kernel_size": 3}, (3, 2, 5, 5), True),
               ({"in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 2,
                 "padding": 1}, (3, 1, 6, 5), True)],
    "MaxPool2D": [({"size": 2}, (3, 3, 4, 4), True), ({"size": 3}, (1, 2, 6, 9), True)],
    "Flatten": [({}, (3, 3, 4, 4), True), ({}, (4, 2, 5), True)],
    "Reshape": [({"shape": [3, 4, 4]}, (3, 48), True), ({"shape": [2, 6]}, (4, 12), True)],
    "BatchNorm": [({"n": 3}, (5, 3), True), ({"n": 3}, (3, 3, 4, 4), True),
                  ({"n": 3}, (5, 3), False), ({"n": 2}, (3, 2, 3, 3), False)],
    "RandomShift": [({"pixels": 2, "seed": 0}, (3, 1, 5, 5), True),
                    ({"pixels": 1, "seed": 1}, (4, 2, 4, 6), True),
                    ({"pixels": 2, "seed": 0}, (3, 1, 5, 5), False)],
}

# What to think about, for the exercises nn.py has today (questions, not answers). A new layer
# of the chapter becomes an exercise without an entry here: it then gets the shapes alone.
HINTS = {
    "BatchNorm.backward": "In training the mean and variance depend on every number of the "
                          "feature. beta is added to every number of a feature and gamma "
                          "multiplies its x_hat (kept by forward): what do their gradients sum "
                          "over (self.axes)? Which two sums does dL/dx need? In inference "
                          "(self.training False) the running statistics are constants.",
    "RandomShift.backward": "Each output number is one input number moved, or a 0. self.shifts "
                            "holds each image's (down, right): where does each gradient go "
                            "back to? shift(x, shifts, pixels) moves images.",
    "Dense.backward": "output = input @ weights + biases. Every example uses every weight: "
                      "which sum over the batch gives dL/dweights[i, j], and dL/dbiases[j]? "
                      "Which product gives dL/dinput? (When self.input_gradient_needed is "
                      "False you may return None.)",
    "Activation.backward": "output[b, i] = f(input[b, i]) depends on input[b, i] alone, so the "
                           "chain rule has one term. self.derivative() gives f' at the last "
                           "input.",
    "ReLU.derivative": "The slope of max(x, 0), at each number of the last input; forward kept "
                       "only self.output: can you tell where x > 0 from it? Take 0 at x = 0.",
    "Sigmoid.derivative": "Differentiate 1 / (1 + exp(-x)) and write the result with "
                          "sigmoid(x) itself, which forward kept as self.output.",
    "Tanh.derivative": "Differentiate tanh(x) = sinh(x) / cosh(x) and write the result with "
                       "tanh(x) itself, which forward kept as self.output.",
    "LeakyReLU.derivative": "The slope is 1 where the input was > 0, self.slope elsewhere: read "
                            "the sign off self.output, and keep its dtype.",
    "Softmax.backward": "Every output of a row depends on every input of the row. What is "
                        "dp[i]/dz[j]? Then sum grad_output[i] * dp[i]/dz[j] over i without "
                        "building the (classes x classes) matrix: one dot product per row.",
    "Dropout.backward": "forward multiplied its input by self.mask (or passed it through when "
                        "self.mask is None), a constant.",
    "Conv2D.backward": "forward was one matrix product of the kernels with self.columns (one "
                       "column per window, made by im2col): its gradients are Dense's with rows "
                       "and columns swapped. For dL/dinput, each column came from a window of "
                       "the padded input: col2im adds it back where it was taken from.",
    "MaxPool2D.backward": "Only the largest entry of each window reached the output. Where a "
                          "window has two equal largest entries, give the gradient to one "
                          "(the first in row-major order).",
    "Flatten.backward": "No number changes, only the shape: which shape must dL/dinput have?",
    "Reshape.backward": "No number changes, only the shape: which shape must dL/dinput have?",
    "Network.backward": "Start from the loss's gradient at the output P: self.fused_prime(Y, P) "
                        "when it is not None (it is already at the last layer's input, so "
                        "skip that layer), else self.loss_prime(Y, P). Then hand each "
                        "layer's backward result to the layer before it, from the last layer "
                        "down to layer self.first_trained.",
    "SGD.step": "Follow the rule in the class docstring for each (param, grad) pair, changing "
                "param in place (param -= ...). The velocity of each parameter lives from "
                "one step to the next (self.velocities; state_for(pairs, state) makes zeros).",
    "Adam.step": "Follow the rule in the class docstring. m and v live from one step to the "
                 "next, one per parameter; count the steps in self.t; change param in place.",
}


# ----------------------------------------------------------------------------------------------
# Which exercises nn.py holds, in the chapter's order
# ----------------------------------------------------------------------------------------------

class Exercise:
    """One function or method to write: `name` is "Dense.backward" or "mse_prime"."""

    def __init__(self, name, kind, owner=None, method=None):
        self.name, self.kind, self.owner, self.method = name, kind, owner, method


@functools.lru_cache(maxsize=1)
def chapter_exercises():
    """The exercises of nn.py, the answer key."""
    with open(nn.__file__, encoding="utf-8") as file:
        return tuple(find_exercises(file.read()))


def find_exercises(source, module=nn):
    """The exercises of nn.py's `source` (`module` is that source imported), in its order."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            cls = getattr(module, node.name, None)
            for item in node.body:
                if (isinstance(item, ast.FunctionDef) and item.name in METHODS
                        and not _only_raises(item) and isinstance(cls, type)):
                    kind = ("network" if issubclass(cls, module.Network) else
                            "layer" if issubclass(cls, module.Layer) else
                            "optimizer" if item.name == "step" else None)
                    if kind is not None:
                        found.append(Exercise(f"{node.name}.{item.name}", kind, node.name,
                                              item.name))
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_prime") \
                and not node.name.startswith("_"):
            found.append(Exercise(node.name, "loss gradient"))
    return found


def _only_raises(function):
    """A method whose body (after its docstring) is just `raise NotImplementedError`."""
    body = [s for s in function.body if not _is_docstring(s)]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def _is_docstring(statement):
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


# ----------------------------------------------------------------------------------------------
# new: nn.py with the exercises' bodies replaced
# ----------------------------------------------------------------------------------------------

HEADER = """\
# nn.py as exercises, written by `python exercises.py new`. Every backward of the chapter, every
# loss gradient and the optimizers' step raise NotImplementedError until you write them; the
# comments above each `raise` say what to compute. Forward passes, predict, save and load and
# check_gradients work as in nn.py. Grade your work with
#     python exercises.py check FOLDER
"""

# A sentence of a docstring that gives a derivative away, e.g. "tanh'(x) = 1 - tanh(x)^2".
_DERIVATIVE = re.compile(r"[A-Za-z]'\(")


def replace_bodies(source, bodies):
    """`source` with the body of each function or method named in `bodies` ("Dense.backward",
    "mse_prime") replaced by bodies[name], a list of lines without indentation. Comments in a
    replaced body go with it; a docstring stays unless it holds a formula (an "="), which may
    be the answer. In a class with a replaced method, docstring sentences that state a
    derivative (f'(x) = ...) go too."""
    lines = source.splitlines(keepends=True)
    edits, done = [], set()                      # edits: (first line, last line, new lines)
    for node in ast.parse(source).body:
        functions = [(node.name, node)] if isinstance(node, ast.FunctionDef) else []
        if isinstance(node, ast.ClassDef):
            functions = [(f"{node.name}.{item.name}", item) for item in node.body
                         if isinstance(item, ast.FunctionDef)]
        replaced = [(name, function) for name, function in functions if name in bodies]
        for name, function in replaced:
            edits.append(_body_edit(lines, function, bodies[name]))
            done.add(name)
        if replaced and isinstance(node, ast.ClassDef) and _is_docstring(node.body[0]):
            first, last = node.body[0].lineno, node.body[0].end_lineno
            edits.append((first, last, _without_derivatives(lines[first - 1:last])))
    if set(bodies) - done:
        raise ValueError(f"not found in the source: {', '.join(sorted(set(bodies) - done))}")
    for first, last, new in sorted(edits, reverse=True):
        lines[first - 1:last] = new
    return "".join(lines)


def _body_edit(lines, function, body):
    """(first line, last line, new lines): everything after the def line(s), and after the
    docstring if it stays, becomes `body`."""
    indent = " " * function.body[0].col_offset
    end = max([function.lineno] + [getattr(node, "end_lineno", None) or 0
                                    for node in ast.walk(function.args)])
    while not lines[end - 1].split("#")[0].rstrip().endswith(":"):   # the line with the ':'
        end += 1
    first = end + 1
    docstring = function.body[0]
    if _is_docstring(docstring) and "=" not in docstring.value.value:
        first = docstring.end_lineno + 1          # the docstring stays as it is
    return first, function.end_lineno, [indent + line + "\n" for line in body]


def _without_derivatives(lines, width=96):
    """A class docstring's lines without the sentences that state a derivative. A paragraph
    that loses a sentence is re-wrapped; one that loses them all goes, blank line too."""
    text = "".join(lines)
    if not _DERIVATIVE.search(text):
        return lines
    indent = lines[0][:len(lines[0]) - len(lines[0].lstrip())]
    inner = text.strip()[3:-3]                   # between the quotes
    paragraphs = []
    for paragraph in re.split(r"\n[ \t]*\n", inner.strip("\n")):
        if _DERIVATIVE.search(paragraph):
            sentences = re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split()))
            kept = " ".join(s for s in sentences if not _DERIVATIVE.search(s))
            if not kept:
                continue
            paragraph = textwrap.fill(kept, width, initial_indent=indent,
                                      subsequent_indent=indent)
        paragraphs.append(paragraph.rstrip())
    paragraphs[0] = paragraphs[0].lstrip()
    body = "\n\n".join(paragraphs)
    if "\n" not in body and len(indent) + len(body) + 6 <= width:
        return [f'{indent}"""{body}"""\n']      # one line, as a one-line docstring is
    return [f'{indent}"""{body}\n', f'{indent}"""\n']


def stub(exercise, example):
    """The lines of an exercise's stub: comments with the hint and the shapes, then a raise."""
    hint = HINTS.get(exercise.name, "Derive it from what forward computes (the class docstring "
                                    "says what that is)." if exercise.kind == "layer" else "")
    comments = textwrap.wrap(" ".join(filter(None, ["Exercise.", hint, example])), 88)
    return ([f"# {line}" for line in comments]
            + [f'raise NotImplementedError("exercise {exercise.name}: not written yet")'])


def new(folder, source=None):
    """Write folder/nn.py, the exercises' nn.py, all or nothing (nn.atomic_file: a full disk
    leaves no half-written file, so `new` can simply run again); never over an existing file.
    Returns the exercises."""
    if source is None:
        with open(nn.__file__, encoding="utf-8") as file:
            source = file.read()
    exercises = find_exercises(source)
    bodies = {exercise.name: stub(exercise, describe(exercise)) for exercise in exercises}
    text = HEADER + replace_bodies(source, bodies)
    path = os.path.join(folder, "nn.py")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder} is a file, not a folder: choose another")
    os.makedirs(folder, exist_ok=True)
    if os.path.lexists(path):
        raise FileExistsError(path)
    try:
        with nn.atomic_file(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}; nothing was written, "
                      f"so `new` can run again once there is room") from None
    return exercises


def describe(exercise):
    """The shapes of an exercise, from its first example in nn.py."""
    if exercise.kind == "layer":
        name = _concrete(exercise)
        arguments, shape, _ = cases_of(getattr(nn, name))[0]
        layer = build(getattr(nn, name), arguments)
        layer.training = True
        output = layer.forward(np.random.default_rng(0).standard_normal(shape))
        if exercise.method == "derivative":
            return (f"Shapes, for example for {layer!r} on x of shape {shape}: return one "
                    f"slope per number of the input, shape {shape}, from self.output.")
        written = "; ".join(f"self.{_name_of(layer, grad)} {grad.shape}"
                            for _, grad in layer.parameters())
        return (f"Shapes, for example for {layer!r} on x of shape {shape}: grad_output is "
                f"dL/d(output), shape {output.shape}; return dL/d(input), shape {shape}"
                + (f"; write in place (grad[...] = ..., never +=): {written}." if written
                   else "."))
    if exercise.kind == "network":
        return ("Shapes: Y and P are (batch, outputs). It returns nothing: each layer's "
                "backward fills that layer's gradients.")
    if exercise.kind == "optimizer":
        return ("pairs is a list of (param, grad) arrays of equal shapes. Change each param in "
                "place; return nothing.")
    loss, activation, fused = _loss_of(exercise.name, nn)
    if not fused:
        return (f"The gradient of {loss.__name__}(y_true, y_pred) with respect to y_pred: an "
                f"array of y_pred's shape (batch, outputs). The loss is a mean: over what?")
    return (f"dL/dz for L = {loss.__name__}(y_true, p) where p = {activation.__name__}(z): an "
            f"array of p's shape (batch, outputs). Chain the loss's gradient through "
            f"{activation.__name__}, then simplify.")


def _name_of(layer, array):
    """The name of the attribute of `layer` that holds `array` (the Layer protocol keeps every
    parameter and gradient as self.<name>)."""
    return next((name for name, value in vars(layer).items() if value is array), "a gradient")


def cases_of(cls):
    """[(arguments, input shape, training), ...]: what a layer of class `cls` is tried on."""
    for base in cls.__mro__:
        if base.__name__ in CASES:
            return CASES[base.__name__]
    arguments = {name: 3 for name, parameter in inspect.signature(cls).parameters.items()
                 if parameter.default is parameter.empty
                 and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
    found = []
    for shape in ((5, 3), (3, 3, 4, 4)):
        layer = _running(cls, arguments, shape)
        if layer is not None:
            found += [(arguments, shape, True)] + ([(arguments, shape, False)]
                                                   if layer.buffers() else [])
    if not found:
        raise ValueError(f"cannot try {cls.__name__} on rows or on images: add it to CASES")
    return found


def _running(cls, arguments, shape):
    """A layer of class `cls` that has run forward in training on an x of `shape`, or None if
    it does not take such an x."""
    try:
        layer = build(cls, arguments)
        layer.training = True
        layer.forward(np.zeros(shape))
        return layer
    except Exception:                            # Activation itself has no function
        return None


def build(cls, arguments):
    """A layer of class `cls`, in float64 when its class takes a dtype (then a relative error
    of 1e-6 is far above rounding)."""
    arguments = dict(arguments)
    if "dtype" in inspect.signature(cls).parameters:
        arguments["dtype"] = np.float64
    return cls(**arguments)


def _concrete(exercise):
    """The class whose instances test the exercise: its own, or (Activation.backward) the
    first class of the chapter that inherits the method and runs."""
    owner = getattr(nn, exercise.owner)
    for name, cls in vars(nn).items():
        if (isinstance(cls, type) and issubclass(cls, owner)
                and next(k for k in cls.__mro__ if exercise.method in vars(k)) is owner
                and _running(cls, *cases_of(cls)[0][:2]) is not None):
            return name
    raise ValueError(f"no layer of the chapter can test {exercise.name}")


# ----------------------------------------------------------------------------------------------
# What an exercise computes on the inputs check chooses. The same functions run twice: in the
# learner's process, on their module (their nn.py), and in check's own, on nn (the answer key).
# Every input comes from a generator seeded by the case, so both sides see the same numbers.
# ----------------------------------------------------------------------------------------------

def run_layer(module, case):
    """A layer's backward (or derivative) on one case: what it returned, and each gradient
    array as the layer holds it afterwards (and any new array bound in its place)."""
    rng = np.random.default_rng(case["seed"])
    layer = build(getattr(module, case["class"]), case["arguments"])
    for param, _ in layer.parameters():          # parameters away from their start (gamma 1)
        param[...] = rng.standard_normal(param.shape)
    if not case["training"] and layer.buffers():  # inference: statistics learned first
        layer.training = True
        layer.forward(rng.standard_normal(case["shape"]) * 2 + 1)
    layer.training, layer.input_gradient_needed = case["training"], True
    output = layer.forward(rng.standard_normal(case["shape"]))
    if case["method"] == "derivative":
        return {"returned": layer.derivative()}
    if hasattr(layer, "derivative"):             # an activation's backward: f' comes from here
        slopes = rng.standard_normal(np.shape(output))
        layer.derivative = slopes.copy
    grad_output = rng.standard_normal(np.shape(output))
    held = [grad for _, grad in layer.parameters()]
    for grad in held:                            # what a gradient held before: to be written over
        grad[...] = rng.standard_normal(grad.shape)
    stale = [grad.copy() for grad in held]
    returned = layer.backward(grad_output)
    now = [grad for _, grad in layer.parameters()]
    return {"returned": returned, "held": held, "stale": stale,
            "bound": [new if new is not old else None for new, old in zip(now, held)]}


def run_network(module, case):
    """Network.backward on layers that report what reaches their backward: (the layers called,
    in order, and what each received)."""
    rng = np.random.default_rng(case["seed"])
    calls = []

    class Probe(module.Layer):
        """Passes its input on; its backward records what it gets and hands back a known array
        (None where nobody needs it, as Dense does)."""

        def __init__(self, index, trained):
            self.index, self.hands_back = index, rng.standard_normal((4, 3))
            self.weight, self.grad_weight = np.zeros(1), np.zeros(1)
            self.trained = trained

        def forward(self, x):
            return x

        def backward(self, grad_output):
            calls.append((self.index, grad_output))
            return self.hands_back if self.input_gradient_needed else None

        def parameters(self):
            return [(self.weight, self.grad_weight)] if self.trained else []

    layers = [Probe(0, False), Probe(1, True), Probe(2, False), Probe(3, False)]
    net = module.Network(layers, loss="mse")
    known = {"loss_prime(Y, P)": rng.standard_normal((4, 3)),
             "fused_prime(Y, P)": rng.standard_normal((4, 3))}
    net.loss_prime = lambda Y, P: known["loss_prime(Y, P)"].copy()
    net.fused_prime = (lambda Y, P: known["fused_prime(Y, P)"].copy()) if case["fused"] else None
    X, Y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    net.backward(Y, net.forward(X, training=True))
    known.update((f"what layer {layer.index}'s backward returned", layer.hands_back)
                 for layer in layers)
    return {"called": [index for index, _ in calls], "received": [grad for _, grad in calls],
            "known": known, "layers": len(layers)}


def run_loss(module, case):
    """A loss gradient at predictions (probabilities where the loss needs them) for targets."""
    loss, activation, fused = _loss_of(case["name"], module)
    rng = np.random.default_rng(case["seed"])
    z = rng.standard_normal(case["shape"])
    y = (rng.standard_normal(z.shape) if activation is None else
         module.one_hot(rng.integers(0, z.shape[1], len(z)), z.shape[1], np.float64))
    p = z if activation is None else activation().function(z)
    return {"returned": getattr(module, case["name"])(y, p)}


def run_optimizer(module, case, change=None):
    """Three steps of an optimizer from the same start with the same gradients: each step's
    update of each parameter. `change(optimizer, step)` (check's own, to build the rule with
    a part missing) returns the optimizer to step with."""
    rng = np.random.default_rng(case["seed"])
    optimizer = getattr(module, case["class"])(**case["settings"])
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    updates = []
    for step in range(3):
        grads = [rng.standard_normal(param.shape) for param in params]
        before = [param.copy() for param in params]
        if change is not None:
            optimizer = change(optimizer, step)
        optimizer.step(list(zip(params, grads)))
        updates.append([param - old for param, old in zip(params, before)])
    return {"updates": updates}


RUNNERS = {"layer": run_layer, "network": run_network, "loss gradient": run_loss,
           "optimizer": run_optimizer}


# ----------------------------------------------------------------------------------------------
# The learner's process: import their nn.py, run the cases, send back numbers
# ----------------------------------------------------------------------------------------------

# Started as `python -E -B -c BOOT exercises.py FOLDER/nn.py task.json answer.json` in an
# empty folder, so that `import nn` finds nothing but the learner's file, registered as nn.
# Started without the three paths, it is check's helper (serve), which forks each task's process.
BOOT = """\
import importlib.util, sys, types
sys.modules["nn"] = types.ModuleType("nn")       # this file's `import nn`: not the answer key
spec = importlib.util.spec_from_file_location("exercises_apart", sys.argv[1])
grader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grader)
grader.answer(*sys.argv[2:5]) if sys.argv[2:] else grader.serve()
"""


def serve():
    """Check's helper: for each task it reads, a line ["FOLDER/nn.py", "task.json",
    "answer.json"], it forks the learner's process (NumPy and this file imported already,
    printing nowhere) and prints its exit status once it has ended (negative: the signal that
    ended it). It prints 0 first, once ready. It serves one check, so one learner's file,
    compiled at the first task; nothing of the learner's runs in it."""
    print(0, flush=True)
    code = None
    for line in sys.stdin:
        paths = json.loads(line)
        try:
            code = code or _compiled(paths[0])
        except Exception:                        # their process meets it again, in its import
            pass
        pid = os.fork()
        if pid == 0:
            try:
                nowhere = os.open(os.devnull, os.O_RDWR)
                for stream in (0, 1, 2):
                    os.dup2(nowhere, stream)
                answer(*paths, code=code)
            finally:
                os._exit(1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)


def _compiled(path):
    """The learner's file compiled as `import` compiles it (SyntaxError where it does not)."""
    with open(path, "rb") as file:
        return compile(file.read(), path, "exec", dont_inherit=True)


def answer(learner_path, task_path, answer_path, code=None):
    """In the learner's process: the task's cases run on their nn.py (compiled here, or `code`,
    the helper's compilation of it, run as the module nn); writes what came back. (Here `nn` is not
    the answer key: these functions use the learner's module alone.)"""
    with open(task_path, encoding="utf-8") as file:
        task = json.load(file)
    try:
        spec = importlib.util.spec_from_file_location("nn", learner_path)
        learner = importlib.util.module_from_spec(spec)
        sys.modules["nn"] = learner
        exec(code or _compiled(learner_path), vars(learner))     # as spec.loader.exec_module
        answers = [_answered(RUNNERS[task["kind"]], learner, case, learner_path)
                   for case in task["cases"]]
    except BaseException as error:               # at import, or sys.exit
        answers = [_raised(error, learner_path)]
    with open(answer_path + ".part", "w", encoding="utf-8") as file:
        json.dump(_encoded(answers), file)
    os.replace(answer_path + ".part", answer_path)
    os._exit(0)                                  # nothing of theirs runs after this


def _answered(runner, learner, case, learner_path):
    try:
        return runner(learner, case)
    except NotImplementedError:
        return {"not written": True}
    except BaseException as error:
        return _raised(error, learner_path)


def _raised(error, learner_path):
    message = str(error).splitlines()[0] if str(error) else ""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(frame.filename) == os.path.abspath(learner_path)]
    line = frames[-1].lineno if frames else 0
    if isinstance(error, SyntaxError) and error.filename == learner_path:   # no frame of theirs
        line = error.lineno or 0
    return {"raised": f"{type(error).__name__}{': ' if message else ''}{message}"[:300],
            "line": line}


def _encoded(value):
    """What the runners give, as JSON: an array of numbers as its shape and numbers; ints,
    booleans and strings as they are; anything else as a word on what it is."""
    if isinstance(value, dict):
        return {str(key): _encoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encoded(item) for item in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= 10 ** 6:
        return {"shape": list(value.shape), "numbers": value.astype(np.float64).ravel().tolist()}
    if isinstance(value, np.ndarray):
        return {"other": f"an array of shape {value.shape} and dtype {value.dtype}"}
    if type(value) in (int, bool, str):            # the layers called; check's own words
        return value
    return {"other": "None" if value is None else f"a {type(value).__name__}"}


def _decoded(value):
    if isinstance(value, dict) and set(value) == {"shape", "numbers"}:
        return np.array(value["numbers"], dtype=np.float64).reshape(value["shape"])
    if isinstance(value, dict) and set(value) == {"other"}:
        return Other(value["other"])
    return value


class Other(str):
    """What the learner's code gave that is not an array of numbers: "None", "a list"..."""


class Apart:
    """Where one check runs the learner's code: a process of its own for each task, with a time
    limit. On Linux, one helper process, started once with NumPy and this file imported (never
    nn.py), forks each of them, which is quicker than a new Python each; elsewhere each is a
    new Python (Windows cannot fork, and on macOS a process forked from one that has loaded
    the system's libraries may crash). Use as `with Apart(path, time_limit) as apart:`."""

    FORKS = sys.platform.startswith("linux")

    def __init__(self, learner_path, time_limit):
        self.learner_path, self.time_limit = learner_path, time_limit
        self.folder = tempfile.mkdtemp()         # their working folder, and the tasks' files
        self.helper, self.tasks = None, 0
        self.environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                                MKL_NUM_THREADS="1")          # one BLAS thread each

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self._end_helper()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, task):
        """`task` run on the learner's file: its answers, one per case, or a sentence saying
        why there are none (it ran out of time, or ended the process)."""
        self.tasks += 1
        task_path, answer_path = (os.path.join(self.folder, f"{name}{self.tasks}.json")
                                  for name in ("task", "answer"))
        with open(task_path, "w", encoding="utf-8") as file:
            json.dump(task, file)
        code = (self._forked if self.FORKS else self._started)(
            os.path.abspath(self.learner_path), task_path, answer_path)
        if isinstance(code, str):
            return code
        try:
            with open(answer_path, encoding="utf-8") as file:
                text = file.read(LARGEST_ANSWER + 1)
            if len(text) > LARGEST_ANSWER:
                return "it sent back more than check reads"
            answers = json.loads(text, object_hook=_decoded)
        except (OSError, ValueError, TypeError):
            if code < 0:
                return f"its process was killed by signal {-code} before it answered"
            return (f"its process ended before it answered (exit status {code}): sys.exit or "
                    f"os._exit?")
        if (not isinstance(answers, list) or len(answers) not in (1, len(task["cases"]))
                or not all(isinstance(answer, dict) for answer in answers)):
            return "it sent back something else than its answers"
        return answers

    def _late(self):
        return (f"still running after {self.time_limit:g} s, and stopped: an endless loop, or "
                f"a sleep?")

    def _python(self, *arguments, **streams):
        """A Python running BOOT in the empty folder, in a session of its own, writing no
        bytecode (no __pycache__ beside their nn.py)."""
        return subprocess.Popen(
            [sys.executable, "-E", "-B", "-c", BOOT, os.path.abspath(__file__), *arguments],
            cwd=self.folder, env=self.environment, stderr=subprocess.DEVNULL,
            start_new_session=True, **streams)

    def _started(self, *paths):
        """The task run by a new Python: its exit status, or why there is none."""
        process = self._python(*paths, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            return process.wait(timeout=self.time_limit)
        except subprocess.TimeoutExpired:
            return self._late()
        finally:
            _stop(process)

    def _forked(self, *paths):
        """The task run by a process the helper forks: its exit status, or why there is none.
        That process, and any it starts, are in the helper's process group: they end with it."""
        if self.helper is None:                  # its start is not the task's time
            self._start_helper()
        try:
            self.helper.stdin.write(json.dumps(paths).encode() + b"\n")
            code = self._heard(self.time_limit)
        except (OSError, ValueError):            # it ended the helper, or wrote to its pipe
            self._end_helper()
            return "its process stopped or ended check's helper process before it answered"
        if code is None:                         # time is up: ended with the helper, a new one
            self._end_helper()                   # for the next task
            return self._late()
        return code

    def _start_helper(self):
        """A new helper, once it says it is ready (its 0); OSError if it does not: then the
        numbers it prints would be read one task late."""
        self.helper = self._python(stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        try:
            ready = self._heard(HELPER_START) == 0
        except ValueError:                       # it ended without a word
            ready = False
        if not ready:
            self._end_helper()
            raise OSError(f"check's helper process did not start within {HELPER_START} s: "
                          f"run check again")

    def _heard(self, seconds):
        """The helper's next number, or None if it says none within `seconds`."""
        ready, _, _ = select.select([self.helper.stdout], [], [], seconds)
        return int(self.helper.stdout.readline()) if ready else None

    def _end_helper(self):
        if self.helper is not None:
            _stop(self.helper)
            self.helper.stdin.close()
            self.helper.stdout.close()
            self.helper = None


def _stop(process):
    """End a process started in a session of its own, and whatever it started (its process
    group): a learner's process, check's helper, or a training run."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:                              # ended already, with all it started
        pass
    process.wait()


# ----------------------------------------------------------------------------------------------
# check: grade each exercise, in the chapter's order
# ----------------------------------------------------------------------------------------------

def check(folder, out=sys.stdout, time_limit=TIME_LIMIT):
    """Grade folder/nn.py; print one line per exercise; return True when every one is right."""
    path, grades = grade_all(folder, time_limit)
    width = max(len(name) for name, _ in grades)
    print(f"Exercises in {path}, in the order of the chapter "
          f"(right: a relative error below {nn.GRADIENT_THRESHOLD:g}):", file=out)
    for number, (name, verdict) in enumerate(grades, 1):
        print(f"{number:4d}  {name:{width}s}  {verdict}", file=out)
    print(summary(grades), file=out)
    return all(verdict == "right" for _, verdict in grades)


def summary(grades):
    right = sum(verdict == "right" for _, verdict in grades)
    unwritten = sum(verdict == "not written" for _, verdict in grades)
    return (f"{right} right, {len(grades) - right - unwritten} wrong, {unwritten} not written "
            f"(of {len(grades)})")


def grade_all(folder, time_limit=TIME_LIMIT):
    """(folder/nn.py, [(exercise, verdict), ...]); ImportError if the file does not import."""
    path = os.path.join(folder, "nn.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: make it with "
                                f"python exercises.py new {folder or '.'}")
    with Apart(path, time_limit) as apart:
        imported = apart.run({"kind": "import", "cases": []})       # no case: the import alone
        if isinstance(imported, str) or imported and "raised" in imported[0]:
            why = imported if isinstance(imported, str) else _said(imported[0], path)
            raise ImportError(f"{path} does not import: {why}")
        with open(path, "rb") as file:             # as Python reads it: UTF-8 unless it says
            ends = _function_ends(file.read())
        return path, [(exercise.name, grade(exercise, apart, ends))
                      for exercise in chapter_exercises()]


def _function_ends(source):
    """{"Dense.backward": its last line} in the learner's source, for 'a `return` missing?'."""
    ends = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            ends[node.name] = node.end_lineno
        elif isinstance(node, ast.ClassDef):
            ends.update((f"{node.name}.{item.name}", item.end_lineno) for item in node.body
                        if isinstance(item, ast.FunctionDef))
    return ends


def grade(exercise, apart, ends=None):
    """'right', 'not written' or 'wrong (...)' for one exercise of the learner's nn.py, run
    `apart` (an Apart)."""
    cases = CASE_MAKERS[exercise.kind](exercise)
    answers = apart.run({"kind": exercise.kind, "cases": cases})
    learner_path = apart.learner_path
    if isinstance(answers, str):
        return f"wrong ({answers})"
    if any(answer.get("not written") for answer in answers):
        return "not written"
    raised = next((answer for answer in answers if "raised" in answer), None)
    if raised is not None and (exercise.kind != "layer" or len(answers) == 1):
        return f"wrong (it raised {_said(raised, learner_path)})"
    where = {"path": learner_path, "end": f"{learner_path}:{(ends or {}).get(exercise.name)}"}
    try:
        return JUDGES[exercise.kind](exercise, cases, answers, where)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return "wrong (what its process sent back is not answers to check's questions)"


def _said(raised, learner_path):
    """What the learner's code raised, where, and whether it was writing a transposed array
    into a gradient ("could not broadcast ... from shape (4, 3) into shape (3, 4)")."""
    line = f", at {learner_path}:{raised['line']}" if raised["line"] else ""
    shapes = re.findall(r"shape \(([\d, ]*)\)", raised["raised"])
    sizes = [sorted(size.strip() for size in shape.split(",")) for shape in shapes]
    transposed = len(shapes) == 2 and shapes[0] != shapes[1] and sizes[0] == sizes[1]
    return raised["raised"] + line + (": its axes are in another order (transposed?)"
                                      if transposed else "")


def _layer_cases(exercise):
    name = _concrete(exercise)
    return [{"class": name, "method": exercise.method, "arguments": arguments, "shape": shape,
             "training": training, "seed": seed}
            for seed, (arguments, shape, training) in enumerate(cases_of(getattr(nn, name)))]


def _judge_layer(exercise, cases, answers, where):
    """The first wrong case in words, then the other cases: which are wrong, which right (a
    BatchNorm written for rows alone is wrong on images and in inference)."""
    first, wrong, right = None, [], []
    for case, given in zip(cases, answers):
        expected = run_layer(nn, case)
        layer = build(getattr(nn, case["class"]), case["arguments"])
        mode = f"{tuple(case['shape'])}, {'training' if case['training'] else 'inference'}"
        problem = (f"it raised {_said(given, where['path'])}" if "raised" in given else
                   _layer_problem(exercise, case, given, expected, layer, where["end"]))
        if problem is None:
            right.append(mode)
        elif first is None:
            first = f"{layer!r} on x of shape {mode}: {problem}"
        else:
            wrong.append(mode)
    if first is None:
        return "right"
    return (f"wrong ({first}" + (f"; also wrong on {'; '.join(wrong)}" if wrong else "")
            + (f"; right on {'; '.join(right)}" if right else "") + ")")


def _layer_problem(exercise, case, given, expected, layer, missing):
    factors = [("the batch size N", case["shape"][0]), ("2", 2)]
    what = "derivative()" if exercise.method == "derivative" else "backward's dL/d(input)"
    problem = _how_wrong(given["returned"], expected["returned"], factors, missing)
    if problem:
        return f"{what} {problem}"
    names = [_name_of(layer, grad) for _, grad in layer.parameters()]
    for name, held, bound, right, stale in zip(names, given.get("held", []),
                                               given.get("bound", []), expected.get("held", []),
                                               expected.get("stale", [])):
        if not isinstance(bound, Other):
            problem = _how_wrong(bound, right, factors)
            return (f"self.{name} was bound to a new array (self.{name} = ...) instead of "
                    f"being written into (the optimizer holds the old one, left as it was)"
                    + (f", and that array {problem}" if problem else ""))
        if isinstance(held, np.ndarray) and held.shape == stale.shape:
            if _close(held, stale):
                return f"self.{name} was not written (it holds what it held before backward)"
            if _close(held - stale, right):
                return (f"self.{name} was added to (+=) instead of written over: it must not "
                        f"depend on what it held before")
        problem = _how_wrong(held, right, factors)
        if problem:
            return f"self.{name} {problem}"
    return None


def _how_wrong(given, expected, factors, missing=None):
    """None when `given` is `expected` (a relative error below the threshold), else what kind
    of wrong it is, as words that follow its name: "has the opposite sign"."""
    if not isinstance(given, np.ndarray):
        what = _kind(given)
        hint = (f": is a `return` missing? (the method ends at {missing})"
                if what == "None" and missing else "")
        return f"is {what}, not an array of shape {expected.shape}{hint}"
    if given.shape != expected.shape:
        if given.size == expected.size and _close(given.reshape(expected.shape), expected):
            return (f"holds the right numbers in the wrong shape: {given.shape}, where "
                    f"{expected.shape} is expected")
        if _transposition(given, expected):
            return f"is transposed: shape {given.shape}, where {expected.shape} is expected"
        return f"has shape {given.shape}, where {expected.shape} is expected"
    if not np.all(np.isfinite(given)):
        return "holds NaN or inf"
    if _close(given, expected):
        return None
    if given.ndim >= 2 and _transposition(given, expected):
        return "is transposed (its axes are in the wrong order)"
    scale = float(np.sum(given * expected) / np.sum(expected * expected)) if np.any(expected) \
        else 0.0
    if scale != 0 and _close(given, scale * expected):
        return _factor_words(scale, factors)
    return f"is wrong (relative error {nn.relative_error(given, expected):.1e})"


def _close(given, expected):
    return bool(nn.relative_error(given, expected) < nn.GRADIENT_THRESHOLD)


def _transposition(given, expected):
    """The order of axes that makes `given` `expected`, if one does (not the identity)."""
    for axes in itertools.permutations(range(given.ndim)):
        if (axes != tuple(range(given.ndim)) and given.transpose(axes).shape == expected.shape
                and _close(given.transpose(axes), expected)):
            return axes
    return None


def _factor_words(scale, factors):
    """"has the opposite sign", "is 5 times too large: off by a factor of the batch size N
    (5)"... for an answer that is `scale` times the right one."""
    sign = "has the opposite sign" if scale < 0 else ""
    size = abs(scale)
    if abs(size - 1) < 1e-6:
        return sign
    how = (f"{size:.3g} times too large" if size > 1 else f"{1 / size:.3g} times too small")
    named = next((name if name == f"{value:g}" else f"{name} ({value:g})"
                  for name, value in factors
                  if min(abs(size - value), abs(size - 1 / value)) < 1e-6 * max(size, 1 / size)),
                 None)
    words = f"is {how}: off by a factor of {named}" if named else f"is {how} (a constant factor)"
    return f"{sign} and {words}" if sign else words


def _network_cases(exercise):
    return [{"fused": False, "seed": 0}, {"fused": True, "seed": 1}]


def _judge_network(exercise, cases, answers, where):
    for case, given in zip(cases, answers):
        expected = run_network(nn, case)
        problem = _network_problem(given, expected)
        if problem:
            with_what = ("a fused loss gradient (self.fused_prime not None)" if case["fused"]
                         else "self.fused_prime None")
            return f"wrong (with {with_what}: {problem})"
    return "right"


def _network_problem(given, expected):
    called, wanted, last = given["called"], expected["called"], expected["layers"] - 1
    if called == sorted(wanted) and called != wanted:
        return "the layers' backward ran first to last: backpropagation runs from the last"
    if last in called and last not in wanted:
        return (f"layer {last} (the last) ran backward: the fused gradient is already at its "
                f"input")
    if 0 in called and 0 not in wanted:
        return ("layer 0's backward ran: it comes before self.first_trained, the first layer "
                "with parameters, and nothing uses its gradient")
    for index in wanted:
        if index not in called:
            return f"layer {index}'s backward never ran"
    if called != wanted:
        return f"the layers' backward ran in the order {called}, not {wanted}"
    for index, received, right in zip(called, given["received"], expected["received"]):
        if _named(received, expected["known"]) != _named(right, expected["known"]):
            return (f"layer {index}'s backward received {_named(received, expected['known'])}, "
                    f"where it needs {_named(right, expected['known'])}")
    return None


def _named(array, known):
    """Which of the `known` arrays `array` is ("loss_prime(Y, P)", ...), or "another array"."""
    return next((name for name, value in known.items() if isinstance(array, np.ndarray)
                 and array.shape == value.shape and _close(array, value)),
                "another array" if isinstance(array, np.ndarray) else _kind(array))


def _kind(value):
    """What a value that is not an array of numbers is: "None", "a list"..."""
    return value if isinstance(value, Other) else f"a {type(value).__name__}"


def _loss_cases(exercise):
    return [{"name": exercise.name, "shape": shape, "seed": seed}
            for seed, shape in enumerate([(5, 3), (4, 6)])]


def _judge_loss(exercise, cases, answers, where):
    for case, given in zip(cases, answers):
        n, outputs = case["shape"]
        factors = [("the batch size N", n), ("the number of outputs", outputs),
                   ("the size of y_pred, N * outputs", n * outputs), ("2", 2)]
        problem = _how_wrong(given["returned"], run_loss(nn, case)["returned"], factors,
                             where["end"])
        if problem:
            return f"wrong (on a batch of shape {case['shape']}: it {problem})"
    return "right"


def _optimizer_cases(exercise):
    """The defaults, then each option that defaults to 0 switched on alone, then all of them:
    each part of the rule tried on its own."""
    cls = getattr(nn, exercise.owner)
    options = [name for name, parameter in inspect.signature(cls).parameters.items()
               if isinstance(parameter.default, (int, float))
               and not isinstance(parameter.default, bool) and parameter.default == 0]
    settings = [{}] + [{name: 0.5} for name in options]
    if len(options) > 1:
        settings.append({name: 0.5 for name in options})
    return [{"class": exercise.owner, "settings": setting, "seed": seed}
            for seed, setting in enumerate(settings)]


def _judge_optimizer(exercise, cases, answers, where):
    for case, given in zip(cases, answers):
        said = (", ".join(f"{name}={value}" for name, value in case["settings"].items())
                + (" alone" if len(case["settings"]) == 1 else "")) or "the defaults"
        problem = _optimizer_problem(case, given["updates"])
        if problem:
            return f"wrong (with {said}: {problem})"
    return "right"


def _optimizer_problem(case, updates):
    if not all(isinstance(update, np.ndarray) for step in updates for update in step):
        return "an update is not an array"
    expected = run_optimizer(nn, case)["updates"]
    if _same_updates(updates, expected):
        return None
    if not any(np.any(update) for step in updates for update in step):
        return "the parameters did not change: change them in place (param -= ...)"
    missing = [what for what, settings, change in _rule_without_a_part(case)
               if _same_updates(updates, run_optimizer(nn, dict(case, settings=settings),
                                                       change)["updates"])]
    if missing:
        return ", or ".join(missing)
    step = next(i for i, (mine, right) in enumerate(zip(updates, expected))
                if not _same_updates([mine], [right]))
    lr = getattr(nn, case["class"])(**case["settings"]).lr
    problem = next(found for found in (_how_wrong(mine, right, [("the learning rate", lr)])
                                       for mine, right in zip(updates[step], expected[step]))
                   if found)
    return f"step {step + 1}'s update {problem}" + (
        ", while step 1's is right: what must live from one step to the next?" if step else "")


def _same_updates(updates, expected):
    return all(u.shape == e.shape and _close(u, e)
               for step, right in zip(updates, expected) for u, e in zip(step, right))


def _rule_without_a_part(case):
    """(what is missing, settings, change) for nn's optimizer with one part of its rule left
    out: each option switched on, its state kept from step to step, Adam's bias correction."""
    cls = getattr(nn, case["class"])
    fresh = cls(**case["settings"])
    state = [name for name, value in vars(fresh).items() if value is None]
    for name in case["settings"]:
        yield (f"{name.replace('_', ' ')} is missing (the update is the one {name}=0 gives)",
               dict(case["settings"], **{name: 0}), None)

    def renewed(optimizer, step):                # a new optimizer at every step
        again = cls(**case["settings"])
        if hasattr(again, "t"):
            again.t = step
        return again
    yield (f"{' and '.join('self.' + name for name in state)} must live from one step to the "
           f"next", case["settings"], renewed)
    if hasattr(fresh, "t"):
        def uncorrected(optimizer, step):
            if step == 0:
                optimizer.t = 10 ** 9            # 1 - beta ** t is then 1: no correction
            return optimizer

        def uncounted(optimizer, step):
            optimizer.t = 0
            return optimizer
        yield "the bias correction is missing", case["settings"], uncorrected
        yield "self.t must count the steps", case["settings"], uncounted


CASE_MAKERS = {"layer": _layer_cases, "network": _network_cases, "loss gradient": _loss_cases,
               "optimizer": _optimizer_cases}
JUDGES = {"layer": _judge_layer, "network": _judge_network, "loss gradient": _judge_loss,
          "optimizer": _judge_optimizer}


def _loss_of(name, module):
    """(the loss, its final activation or None, whether `name` is the fused gradient at that
    activation's input) for the loss gradient called `name`."""
    for loss, prime, activation, fused in module.LOSSES.values():
        if prime.__name__ == name or fused is not None and fused.__name__ == name:
            return loss, activation, prime.__name__ != name
    raise ValueError(f"{name} is not the gradient of any loss in LOSSES")


# ----------------------------------------------------------------------------------------------
# train: MNIST with the learner's nn.py, beside the library's
# ----------------------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_SCRIPT = os.path.join(HERE, "train_mnist.py")
# train_mnist.py's flags that read a model or write a file: two runs at once cannot share them.
FILE_FLAGS = {"--save", "--history", "--plot", "--out", "--load", "--predict"}
# Runs train_mnist.py with the learner's folder first on the path, so its `import nn` (and
# every module's beside it) finds the learner's nn.py.
WITH_THEIR_NN = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")


def train(folder, options, out=sys.stdout, time_limit=TIME_LIMIT):
    """Train MNIST with train_mnist.py twice at once, the same seed and settings (its defaults
    and `options`): with folder/nn.py and with nn.py. Returns the exit status."""
    path, grades = grade_all(folder, time_limit)
    unwritten = [name for name, verdict in grades if verdict == "not written"]
    unfinished = [name for name, verdict in grades  # would hang or end the training's process
                  if verdict.startswith(("wrong (still running", "wrong (its process"))]
    if unwritten or unfinished:
        print(f"{path} cannot train yet: " + "; ".join(
            f"{_count(names)} {what} ({', '.join(names)})" for names, what in
            ((unwritten, "not written"), (unfinished, "hanging or exiting")) if names)
            + f". Write them, then run: python exercises.py train {folder}", file=out)
        return 1
    wrong = [name for name, verdict in grades if verdict != "right"]
    if wrong:
        print(f"{path}: {_count(wrong)} wrong ({', '.join(wrong)}; "
              f"python exercises.py check {folder} says how): training anyway", file=out)
    settings = " ".join(options) or "its defaults"
    print(f"training MNIST with {path} and with {os.path.join(HERE, 'nn.py')}, both at once "
          f"(each on half the cores), with train_mnist.py's settings ({settings})",
          file=out, flush=True)
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    environment = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
                       MKL_NUM_THREADS=threads, PYTHONDONTWRITEBYTECODE="1")
    commands = {path: [sys.executable, "-c", WITH_THEIR_NN, os.path.abspath(folder)],
                os.path.join(HERE, "nn.py"): [sys.executable]}
    runs = {}
    try:
        for name, command in commands.items():
            printed = tempfile.TemporaryFile()
            runs[name] = (subprocess.Popen(command + [TRAIN_SCRIPT, "--quiet"] + options,
                                           cwd=HERE, env=environment, stdin=subprocess.DEVNULL,
                                           stdout=printed, stderr=subprocess.STDOUT,
                                           start_new_session=True), printed)
        codes = {name: run.wait() for name, (run, _) in runs.items()}
        results = {name: (_tail(printed), codes[name]) for name, (_, printed) in runs.items()}
    finally:
        for run, printed in runs.values():
            _stop(run)
            printed.close()
    status = 0
    for (name, (printed, code)), whose in zip(results.items(), ("yours", "the library's")):
        accuracy = re.findall(r"test accuracy: ([0-9.]+%)", printed)
        if code == 0 and accuracy:
            print(f"test accuracy {accuracy[-1]} with {name} ({whose})", file=out)
            # train_mnist.py's own word on the nn.py it imported, when not the one beside it
            for note in re.findall(r"^note: using .*", printed, re.M)[:1]:
                print(f"  ({note[len('note: '):]})", file=out)
        else:
            last = (printed.strip().splitlines() or ["no output"])[-1]
            print(f"with {name} ({whose}) training failed: {last}", file=out)
            status = 1
    return status


def _tail(file, size=2 ** 16):
    """The end of what a run printed into `file`, once the run is over (however much it was)."""
    file.seek(max(0, file.seek(0, os.SEEK_END) - size))
    return file.read().decode("utf-8", errors="replace")


def _count(names):
    return f"{len(names)} exercise{' is' if len(names) == 1 else 's are'}"


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="nn.py as a course: 'new FOLDER' writes FOLDER/nn.py with every gradient "
                    "and update left to write; 'check FOLDER' grades it; 'train FOLDER "
                    "[train_mnist.py options]' trains MNIST with it beside nn.py.")
    parser.add_argument("command", choices=["new", "check", "train"])
    parser.add_argument("folder")
    args, options = parser.parse_known_args(argv)
    if options and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    written = [option for option in options if option.split("=")[0] in FILE_FLAGS]
    if written:
        parser.error(f"train runs train_mnist.py twice at once, so it takes no flag that reads "
                     f"a model or writes a file ({', '.join(written)})")
    try:
        if args.command == "new":
            exercises = new(args.folder)
            print(f"wrote {os.path.join(args.folder, 'nn.py')}: {len(exercises)} exercises "
                  f"({', '.join(exercise.name for exercise in exercises)}). Write them, then "
                  f"run: python exercises.py check {args.folder}")
            return 0
        if args.command == "train":
            return train(args.folder, options)
        return 0 if check(args.folder) else 1
    except FileExistsError:
        print(f"exercises.py: {os.path.join(args.folder, 'nn.py')} exists already; it is left "
              f"as it is (choose another folder)", file=sys.stderr)
    except (OSError, ImportError) as error:
        print(f"exercises.py: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("exercises.py: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""nn.py as a course: write every gradient and update yourself, and be graded.

    python exercises.py new FOLDER     FOLDER/nn.py: nn.py with the exercises left to write
    python exercises.py check FOLDER   grades FOLDER/nn.py: one line per exercise, in the
                                       chapter's order; exits 0 only when all are right

The exercises are found in nn.py itself: the backward of every layer of the chapter (and of
Network), the derivative of every activation, every loss gradient (the functions named
*_prime, the fused ones included) and the optimizers' step. In FOLDER/nn.py each raises
NotImplementedError, with comments saying what to compute and the shapes; everything else
(forward passes, predict, save and load, check_gradients) works as in nn.py.

check grades each exercise alone, with the rest of the library taken from nn.py (the answer
key), so one mistake does not spoil the grades of the others:
- a layer's backward or an activation's derivative: nn.check_gradients on the layer, built
  with small arguments and checked as it trains;
- Network.backward: nn.check_gradients on two small networks (a fused loss and mse);
- a loss gradient: nn.check_gradients on the loss seen as a layer (finite differences);
- an optimizer's step: three steps side by side with nn.py's, with its defaults and with every
  option that defaults to 0 switched on; each update must match.
Right means what it means for check_gradients: a relative error below nn.GRADIENT_THRESHOLD.
"""

import argparse
import ast
import functools
import inspect
import math
import os
import re
import sys
import textwrap
import traceback
import types

import numpy as np

import nn

METHODS = ("backward", "derivative", "step")     # a class's methods that are exercises
FEATURES = 3                                     # features or channels of the example inputs

# The arguments an example layer is built with, by the name of its __init__'s argument; any
# other argument without a default gets FEATURES (a layer's size: BatchNorm(n), ...).
EXAMPLE_ARGUMENTS = {"n_in": FEATURES, "n_out": 4, "in_channels": FEATURES, "out_channels": 2,
                     "kernel_size": 3, "padding": 1, "rate": 0.5, "slope": 0.1, "size": 2,
                     "shape": (FEATURES, 4, 4), "seed": 0}

# What to think about, for the exercises nn.py has today (questions, not answers). A new layer
# of the chapter becomes an exercise without an entry here: it then gets the shapes alone.
HINTS = {
    "BatchNorm.backward": "In training the mean and variance depend on every number of the "
                          "feature. With x_hat kept by forward and the two sums over the "
                          "feature's m numbers (self.axes), grad_beta = sum(g) and grad_gamma = "
                          "sum(g * x_hat), what is dL/dx? In inference (self.training False) "
                          "the running statistics are constants.",
    "RandomShift.backward": "Each output number is one input number moved, or a 0. self.shifts "
                            "holds each image's (down, right): where does each gradient go "
                            "back to? _shifted moves images.",
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
                "one step to the next (self.velocities; _state_for(pairs, state) makes zeros).",
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
    """Write folder/nn.py, the exercises' nn.py; never over an existing file. Returns the
    exercises."""
    if source is None:
        with open(nn.__file__, encoding="utf-8") as file:
            source = file.read()
    exercises = find_exercises(source)
    bodies = {exercise.name: stub(exercise, describe(exercise)) for exercise in exercises}
    text = HEADER + replace_bodies(source, bodies)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "nn.py"), "x", encoding="utf-8") as file:   # never over
        file.write(text)
    return exercises


def describe(exercise):
    """The shapes of an exercise, from its example in nn.py."""
    if exercise.kind == "layer":
        layer, x = example_layer(getattr(nn, _concrete(exercise, nn)))
        layer.training = True
        output = layer.forward(x)
        if exercise.method == "derivative":
            return (f"Shapes, for example for {layer!r} on x of shape {x.shape}: return one "
                    f"slope per number of the input, shape {x.shape}, from self.output.")
        written = "; ".join(f"{name} {grad.shape}" for name, grad in _gradient_names(layer))
        return (f"Shapes, for example for {layer!r} on x of shape {x.shape}: grad_output is "
                f"dL/d(output), shape {output.shape}; return dL/d(input), shape {x.shape}"
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


def _gradient_names(layer):
    for j, (param, grad) in enumerate(layer.parameters()):
        yield (nn._attribute_names(layer, grad, required=False) or [f"gradient {j}"])[0], grad


# ----------------------------------------------------------------------------------------------
# check: grade each exercise alone, with the rest from nn.py
# ----------------------------------------------------------------------------------------------

def check(folder, out=sys.stdout):
    """Grade folder/nn.py; print one line per exercise; return True when every one is right."""
    path = os.path.join(folder, "nn.py")
    learner = _import(path)
    grades = [(exercise.name, grade(exercise, learner)) for exercise in chapter_exercises()]
    width = max(len(name) for name, _ in grades)
    print(f"Exercises in {path}, in the order of the chapter "
          f"(right: a relative error below {nn.GRADIENT_THRESHOLD:g}):", file=out)
    for number, (name, verdict) in enumerate(grades, 1):
        print(f"{number:4d}  {name:{width}s}  {verdict}", file=out)
    right = sum(verdict == "right" for _, verdict in grades)
    unwritten = sum(verdict == "not written" for _, verdict in grades)
    print(f"{right} right, {len(grades) - right - unwritten} wrong, {unwritten} not written "
          f"(of {len(grades)})", file=out)
    return right == len(grades)


def _import(path):
    """The learner's nn.py as a module, compiled afresh (no cached bytecode: a file edited
    twice in a second is still read as it is now)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: make it with "
                                f"python exercises.py new {os.path.dirname(path) or '.'}")
    module = types.ModuleType("learners_nn")
    module.__file__ = path
    try:
        with open(path, encoding="utf-8") as file:
            exec(compile(file.read(), path, "exec"), module.__dict__)
    except Exception as error:
        raise ImportError(f"{path} does not run: {type(error).__name__}: {error}") from None
    return module


def grade(exercise, learner):
    """'right', 'not written' or 'wrong (...)' for one exercise of the `learner` module."""
    if not _written_in(exercise, learner):
        return "not written"
    try:
        return {"layer": _grade_layer, "network": _grade_network, "optimizer": _grade_optimizer,
                "loss gradient": _grade_loss}[exercise.kind](exercise, learner)
    except NotImplementedError:                  # the stub, or a part still to write
        return "not written"
    except Exception as error:                   # the learner's code raised: that is the grade
        message = str(error).splitlines()[0] if str(error) else ""
        return (f"wrong (it raised {type(error).__name__}{': ' if message else ''}{message}"
                f"{_where_in(learner, error)})")


def _where_in(learner, error):
    """", at FILE:LINE": the last place in the learner's own file that the error went
    through, so they know which line to look at ("" if it did not go through it)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if frame.filename == learner.__file__]
    return f", at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _written_in(exercise, learner):
    """Whether the learner's module still has the function or method (it may be a stub)."""
    if exercise.owner is None:
        return callable(getattr(learner, exercise.name, None))
    return exercise.method in vars(getattr(learner, exercise.owner, object))


def _verdict(report):
    """check_gradients' report as a grade: right, or wrong with the worst error and why."""
    if report.right:
        return "right"
    name, error = max(report.items(), key=lambda item: item[1])
    why = f"; {report.problems[0]}" if report.problems else ""
    return f"wrong ({name}: relative error {error:.1e}{why})"


def answer_key_class(learner, name, graded=None):
    """The learner's class `name`, with every exercise it inherits taken from nn.py except
    `graded` ("ReLU.derivative"), and nn's class as a base too, so nn's tools accept it."""
    cls = getattr(learner, name)
    keys = {exercise.name for exercise in chapter_exercises()}
    swapped = {}
    for method in METHODS:
        owner = next((k for k in cls.__mro__ if method in vars(k)), None)
        key = f"{owner.__name__}.{method}" if owner is not None else None
        if key in keys and key != graded:
            swapped[method] = vars(getattr(nn, owner.__name__))[method]
    return type(name, (cls, getattr(nn, name)), swapped)


def _concrete(exercise, learner):
    """The class whose instances test the exercise: its own, or (Activation.backward) the
    first class of the chapter that inherits the method and can be built and run."""
    for candidate in [exercise.owner] + [name for name, cls in vars(nn).items()
                                         if isinstance(cls, type) and name != exercise.owner
                                         and issubclass(cls, getattr(nn, exercise.owner))]:
        real = getattr(nn, candidate)
        owner = next(k for k in real.__mro__ if exercise.method in vars(k))
        if owner.__name__ == exercise.owner and hasattr(learner, candidate):
            try:
                example_layer(real)
            except Exception:
                continue
            return candidate
    raise ValueError(f"no layer of the chapter can test {exercise.name}")


def _grade_layer(exercise, learner):
    cls = answer_key_class(learner, _concrete(exercise, learner), graded=exercise.name)
    layer, x = example_layer(cls)
    return _verdict(nn.check_gradients(layer, x, training=True, verbose=False))


def _grade_network(exercise, learner):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, FEATURES))
    network = answer_key_class(learner, exercise.owner, graded=exercise.name)

    def layer(name, *arguments, **options):
        return answer_key_class(learner, name)(*arguments, **options)

    cases = [([layer("Dense", FEATURES, 4, seed=0), layer("Tanh"), layer("Dense", 4, 3, seed=1),
               layer("Softmax")], "categorical_crossentropy", nn.one_hot([0, 2, 1, 1, 0], 3)),
             ([layer("Dense", FEATURES, 4, seed=2), layer("Tanh"), layer("Dense", 4, 2, seed=3)],
              "mse", rng.standard_normal((5, 2)))]
    for layers, loss, y in cases:
        net = network(layers, loss=loss)
        net.loss, net.loss_prime, _, net.fused_prime = nn.LOSSES[loss]    # nn's, not theirs
        verdict = _verdict(nn.check_gradients(net, x, y, verbose=False))
        if verdict != "right":
            return verdict.replace("wrong (", f"wrong (loss {loss}: ", 1)
    return "right"


def _grade_loss(exercise, learner):
    loss, activation, fused = _loss_of(exercise.name, nn)
    prime = getattr(learner, exercise.name)
    rng = np.random.default_rng(11)
    z = rng.standard_normal((4, FEATURES))
    if activation is None:
        y = rng.standard_normal(z.shape)
    else:                                        # targets of a classifier: one-hot rows
        y = nn.one_hot(rng.integers(0, FEATURES, len(z)), FEATURES, np.float64)
    # A loss gradient is checked at the predictions p (probabilities if the loss needs them);
    # a fused one at z, the input of the final activation p = activation(z).
    squash = activation().function if fused else (lambda p: p)
    x = z if fused or activation is None else activation().function(z)

    class Loss(nn.Layer):                        # the loss as a layer: x -> [[loss]]
        def forward(self, x):
            self.x = x
            return np.array([[loss(y, squash(x))]])

        def backward(self, grad_output):
            return grad_output[0, 0] * prime(y, squash(self.x))

        def __repr__(self):
            return exercise.name

    given = prime(y, squash(x))
    if not isinstance(given, np.ndarray) or given.shape != x.shape:
        return (f"wrong (it returned {nn._described(given)}; expected an array of shape "
                f"{x.shape}, the shape of {'z' if fused else 'y_pred'})")
    return _verdict(nn.check_gradients(Loss(), x, verbose=False)).replace("(input: ", "(", 1)


def _loss_of(name, module):
    """(the loss, its final activation or None, whether `name` is the fused gradient at that
    activation's input) for the loss gradient called `name`."""
    for loss, prime, activation, fused in module.LOSSES.values():
        if prime.__name__ == name or fused is not None and fused.__name__ == name:
            return loss, activation, prime.__name__ != name
    raise ValueError(f"{name} is not the gradient of any loss in LOSSES")


def _grade_optimizer(exercise, learner):
    real_class, their_class = getattr(nn, exercise.owner), getattr(learner, exercise.owner)
    options = {name: 0.5 for name, parameter in
               inspect.signature(real_class.__init__).parameters.items()
               if isinstance(parameter.default, (int, float))
               and not isinstance(parameter.default, bool) and parameter.default == 0}
    for settings in ({}, options):
        ours, theirs = real_class(**settings), their_class(**settings)
        rng = np.random.default_rng(5)
        start = [rng.standard_normal((FEATURES, 2)), rng.standard_normal(2)]
        our_params, their_params = [p.copy() for p in start], [p.copy() for p in start]
        said = ", ".join(f"{name}={value}" for name, value in settings.items()) or "defaults"
        for step in range(1, 4):
            grads = [rng.standard_normal(p.shape) for p in start]
            before = [p.copy() for p in their_params]
            ours.step(list(zip(our_params, [g.copy() for g in grads])))
            theirs.step(list(zip(their_params, [g.copy() for g in grads])))
            ours_moved = [p - b for p, b in zip(our_params, before)]
            theirs_moved = [p - b for p, b in zip(their_params, before)]
            if not any(np.any(m) for m in theirs_moved):
                return (f"wrong (the parameters did not change at step {step} ({said}): "
                        f"change them in place, param -= ...)")
            error = max(_relative_error(t, o) for t, o in zip(theirs_moved, ours_moved))
            if not error < nn.GRADIENT_THRESHOLD:
                return f"wrong (step {step} ({said}): the update is off by {error:.1e})"
    return "right"


def _relative_error(a, b):
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    return nn._relative_error(a, b)


def example_layer(cls):
    """(a small layer of class `cls`, an input x it takes), in float64: built with
    EXAMPLE_ARGUMENTS, and x the first of a few inputs (rows, long rows, images) that the layer
    takes in training; one whose output has another shape than x is preferred."""
    arguments = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in EXAMPLE_ARGUMENTS:
            arguments[name] = EXAMPLE_ARGUMENTS[name]
        elif parameter.default is parameter.empty:
            arguments[name] = FEATURES
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((4, FEATURES)), rng.standard_normal((2, FEATURES * 16)),
              rng.standard_normal((2, FEATURES, 4, 4))]
    taken = []
    for x in inputs:
        layer = cls(**arguments)
        nn._cast_parameters([layer], np.float64)
        layer.training = True
        try:
            output = layer.forward(x.copy())
        except (ValueError, IndexError, TypeError):     # it does not take this x
            continue
        if isinstance(output, np.ndarray) and np.all(np.isfinite(output)):
            taken.append((output.shape != x.shape, cls(**arguments), x))
    if not taken:
        raise ValueError(f"cannot build an example of {cls.__name__} with {arguments} that takes "
                         f"rows or images: add its arguments to EXAMPLE_ARGUMENTS")
    _, layer, x = max(taken, key=lambda t: t[0])    # the first one that changes the shape
    return layer, x


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="nn.py as a course: 'new FOLDER' writes FOLDER/nn.py with every gradient "
                    "and update left to write; 'check FOLDER' grades it.")
    parser.add_argument("command", choices=["new", "check"])
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "new":
            exercises = new(args.folder)
            print(f"wrote {os.path.join(args.folder, 'nn.py')}: {len(exercises)} exercises "
                  f"({', '.join(exercise.name for exercise in exercises)}). Write them, then "
                  f"run: python exercises.py check {args.folder}")
            return 0
        return 0 if check(args.folder) else 1
    except FileExistsError:
        print(f"exercises.py: {os.path.join(args.folder, 'nn.py')} exists already; it is left "
              f"as it is (choose another folder)", file=sys.stderr)
    except (OSError, ImportError) as error:
        print(f"exercises.py: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The documentation's code runs as printed: every ```python block of README.md and docs/*.md,
each on its own, in a fresh interpreter started in the repository's root, as a reader who
copies it would run it. Shell commands, output and notebook magics use other fences
(```bash, ```text, ```ipython) and are not run.

    python -m unittest test_docs -v
"""

import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import pandas as pd

ROOT = os.path.dirname(os.path.abspath(__file__))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(path, ROOT)
                                   for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
TIME_LIMIT = 60          # seconds for one block; each takes about one
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
NOTEBOOK = "walkthrough.ipynb"
COLAB_DATA = "/content/sample_data/"     # where Colab keeps its sample of MNIST


def code_blocks(text):
    """(language, first line number, code) of every fenced block of a Markdown text."""
    return [(match.group(1), text.count("\n", 0, match.start()) + 1, match.group(2))
            for match in FENCE.finditer(text)]


def run_block(code, folder=ROOT):
    """Run one block as a reader would: a fresh interpreter in the repository's root (or in
    `folder`)."""
    # The blocks are small: one BLAS thread runs them fastest, and does not slow down to a
    # crawl when other processes compete for the cores, as two spinning threads do.
    environment = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                       OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=TIME_LIMIT)


def read(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as file:
        return file.read()


def notebook_cells(kind=None):
    """The notebook's cells' sources, of one kind ("code", "markdown") or all."""
    with open(os.path.join(ROOT, NOTEBOOK), encoding="utf-8") as file:
        cells = json.load(file)["cells"]
    return ["".join(cell["source"]) for cell in cells if kind in (None, cell["cell_type"])]


def colab_sample_data(folder, train_rows, test_rows):
    """A stand-in for Colab's /content/sample_data/ in `folder`: MNIST's first rows as plain CSV
    files of Colab's names and layout (no header)."""
    for name, source, rows in (("mnist_train_small.csv", "mnist_train.csv.gz", train_rows),
                               ("mnist_test.csv", "mnist_test.csv.gz", test_rows)):
        pd.read_csv(os.path.join(ROOT, "data", source), header=None, nrows=rows).to_csv(
            os.path.join(folder, name), header=False, index=False)
    return folder + os.sep


class CodeBlocksRun(unittest.TestCase):

    def test_every_python_block_runs_alone_from_the_root(self):
        blocks = [(document, line, code) for document in DOCUMENTS
                  for language, line, code in code_blocks(read(document)) if language == "python"]
        self.assertGreaterEqual(len(blocks), 3, "the README and docs should hold runnable examples")
        before = set(os.listdir(ROOT))
        for document, line, code in blocks:
            with self.subTest(f"{document}, line {line}"):
                try:
                    result = run_block(code)
                except subprocess.TimeoutExpired:
                    self.fail(f"{document}, line {line}: still running after {TIME_LIMIT} s")
                self.assertEqual(result.returncode, 0,
                                 f"{document}, the ```python block at line {line} failed:\n"
                                 f"{result.stderr[-2000:]}")
        left = set(os.listdir(ROOT)) - before - {"__pycache__"}
        self.assertFalse(left, f"the examples left files in the repository's root: {left}; "
                               f"write them to a temporary folder")

    def test_python_blocks_hold_only_python(self):
        # Notebook magics (%%writefile, !pip) and shell commands fail in a Python file: they
        # belong in ```ipython or ```bash blocks.
        for document in DOCUMENTS:
            for language, line, code in code_blocks(read(document)):
                if language == "python":
                    with self.subTest(f"{document}, line {line}"):
                        compile(code, f"{document}:{line}", "exec")

    def test_links_to_files_of_the_repository_exist(self):
        # No placeholder addresses: every relative link or image names a file that is here.
        for document in DOCUMENTS:
            text = read(document)
            self.assertFalse("OWNER/REPO" in text, f"{document} holds a placeholder address")
            folder = os.path.dirname(os.path.join(ROOT, document))
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue
                with self.subTest(f"{document} -> {target}"):
                    path = os.path.join(folder, target.split("#")[0])
                    self.assertTrue(os.path.exists(path), f"{document} links to {target}, "
                                                          f"which is not in the repository")


class FlagsDocumented(unittest.TestCase):

    def test_docs_list_exactly_the_flags_of_train_mnist(self):
        # The flag tables of docs/train_mnist.md (rows starting with a flag) against --help.
        result = subprocess.run([sys.executable, "train_mnist.py", "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=TIME_LIMIT)
        self.assertEqual(result.returncode, 0, result.stderr)
        offered = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.stdout)) - {"--help"}
        documented = set(re.findall(r"^\| `(--[a-z][a-z-]*)", read("docs/train_mnist.md"), re.M))
        self.assertGreater(len(offered), 10, "could not read the flags from --help")
        self.assertEqual(sorted(offered - documented), [], "flags docs/train_mnist.md misses")
        self.assertEqual(sorted(documented - offered), [], "flags train_mnist.py does not have")


class FirstHour(unittest.TestCase):
    """A learner's first hour: where to start, in Colab or on their machine, and the examples
    and the walkthrough working by every route."""

    def test_the_first_screen_says_how_to_start_in_colab_and_at_home_walkthrough_first(self):
        first_screen = "\n".join(read("README.md").splitlines()[:30])
        for needed in ("Colab", "walkthrough.ipynb", "git clone", "own machine",
                       "python exercises.py new"):
            self.assertIn(needed, first_screen)
        self.assertLess(first_screen.index("walkthrough.ipynb"),
                        first_screen.index("python train_mnist.py"))

    def test_no_clone_can_hide_nn_py_from_import_nn(self):
        # A folder named like a module (nn) in the notebook's folder is a namespace package:
        # after a restart `import nn` finds it instead of nn.py. A name that is not an
        # identifier cannot be imported.
        targets = [line.split("&&")[0].split()[-1] for line in read("README.md").splitlines()
                   if "git clone" in line]
        code = "\n".join(notebook_cells("code"))
        self.assertIn('"git", "clone", "--depth", "1", address, CLONE]', code)
        targets.append(re.search(r'^CLONE = "([^"]+)"', code, re.M).group(1))
        self.assertGreaterEqual(len(targets), 4)
        for target in targets:
            self.assertFalse(target.isidentifier(), target)
        with tempfile.TemporaryDirectory() as folder:
            os.mkdir(os.path.join(folder, "nn-repo"))
            shutil.copy(os.path.join(ROOT, "nn.py"), os.path.join(folder, "nn-repo"))
            found = run_block("import nn; print(nn.__file__)", folder)
        self.assertIn("No module named 'nn'", found.stderr)     # not a broken namespace

    def test_the_walkthrough_clones_into_nn_repo_and_finds_it_again_after_a_restart(self):
        # The first code cell as Colab runs it: google.colab loaded, an address typed in (this
        # repository, cloned from its folder); then again after a restart, back in the folder
        # the notebook started in.
        cell = next(cell for cell in notebook_cells("code") if "FILES = [" in cell)
        runs = textwrap.dedent(f"""
            import builtins, os, sys, types
            sys.modules["google.colab"] = types.ModuleType("google.colab")
            builtins.input = lambda prompt: {ROOT!r}
            start = os.getcwd()
            for run in range(2):
                os.chdir(start)
                exec({cell!r})
                print(os.path.relpath(os.getcwd(), start))
            """)
        with tempfile.TemporaryDirectory() as folder:
            result = run_block(runs, folder)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.split(), ["nn.py", "is", "here", "nn-repo"] * 2)
            self.assertTrue(os.path.exists(os.path.join(folder, "nn-repo", "nn.py")))

    def test_readme_examples_run_in_colab_beside_nn_py_alone(self):
        # As in Colab: nn.py written into an empty folder (%%writefile), Colab's sample of MNIST
        # where Colab keeps it, and no data/ folder.
        blocks = [(line, code) for language, line, code in code_blocks(read("README.md"))
                  if language == "python"]
        self.assertGreaterEqual(len(blocks), 1)
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(os.path.join(ROOT, "nn.py"), folder)
            sample = colab_sample_data(tempfile.mkdtemp(dir=folder), 6000, 1000)
            for line, code in blocks:
                with self.subTest(f"README.md, line {line}"):
                    if "data/" in code:                  # says where its data comes from
                        self.assertIn(COLAB_DATA, code)
                    result = run_block(code.replace(COLAB_DATA, sample), folder)
                    self.assertEqual(result.returncode, 0, result.stderr[-2000:])

    def test_the_walkthrough_and_readme_agree_on_timings_and_pixels(self):
        readme, notebook = read("README.md"), "\n".join(notebook_cells("markdown"))
        self.assertIn("the walkthrough one to two minutes", readme)
        self.assertIn("The whole notebook takes one to two minutes on a", notebook)
        for text in (readme, notebook):
            self.assertIn("train_mnist.py` about half a minute" if text is readme
                          else "in about half a minute", text)
            self.assertIn("from 0 (background) to 255 (full ink)", " ".join(text.split()))
            self.assertIn("dark on white", " ".join(text.split()))
            for other in ("well under a minute", "a minute or two", "(white)", "(black)",
                          "light ink on black"):
                self.assertNotIn(other, " ".join(text.split()))


def notebook_files():
    """The FILES the notebook's first code cell lists: what it needs beside it."""
    return ast.literal_eval(re.search(r"^FILES = (\[.*?\])", "\n".join(notebook_cells("code")),
                                      re.M | re.S).group(1))


class WalkthroughFiles(unittest.TestCase):

    def test_files_lists_exactly_the_modules_the_notebook_reaches(self):
        # The modules of the repository the notebook imports, or runs (exercises.py), and
        # every module of the repository they import in turn, anywhere in their code.
        code = re.sub(r"^FILES = \[.*?\]", "", "\n".join(notebook_cells("code")),
                      flags=re.M | re.S)
        local = {os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "*.py"))}
        names = set(re.findall(r"^\s*(?:import|from) (\w+)", code, re.M))
        names |= {name[:-3] for name in re.findall(r'"(\w+\.py)"', code)}
        reached, todo = set(), [name + ".py" for name in names if name + ".py" in local]
        while todo:
            name = todo.pop()
            if name in reached:
                continue
            reached.add(name)
            with open(os.path.join(ROOT, name), encoding="utf-8") as file:
                tree = ast.parse(file.read())
            for node in ast.walk(tree):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module] if isinstance(node, ast.ImportFrom) else [])
                todo += [module + ".py" for module in modules if module + ".py" in local]
        self.assertEqual(sorted(notebook_files()), sorted(reached))


class WalkthroughAlone(unittest.TestCase):
    """The walkthrough as a learner opens it alone in Colab and takes the upload route: only
    the files its first cell lists beside it, Colab's sample of MNIST, and each exercise's
    solution run in a new cell at the end, as the notebook says."""

    def test_runs_with_only_its_files_and_every_solution_at_the_end(self):
        if not os.environ.get("NN_WALKTHROUGH"):
            self.skipTest("runs the whole walkthrough (a minute or more): NN_WALKTHROUGH=1 "
                          "python -m unittest test_docs runs it, as .ci/run does")
        try:
            import nbformat
            from nbclient import NotebookClient
        except ImportError:
            self.skipTest("nbclient and nbformat run the notebook (.ci/run installs them)")
        files = notebook_files()
        self.assertIn("nn.py", files)
        solutions = [code for cell in notebook_cells("markdown")
                     for language, _, code in code_blocks(cell) if language == "python"]
        self.assertGreaterEqual(len(solutions), 8)
        notebook = nbformat.read(os.path.join(ROOT, NOTEBOOK), as_version=4)
        with tempfile.TemporaryDirectory() as folder:
            for name in files:
                shutil.copy(os.path.join(ROOT, name), folder)
            sample = colab_sample_data(tempfile.mkdtemp(), 20_000, 2_000)
            try:
                for cell in notebook.cells:
                    if cell.cell_type == "code":
                        cell.source = cell.source.replace(COLAB_DATA, sample)
                        cell.outputs = []
                notebook.cells += [nbformat.v4.new_code_cell(code) for code in solutions]
                client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                        resources={"metadata": {"path": folder}})
                client.execute()
            finally:
                shutil.rmtree(sample, ignore_errors=True)
        printed = "".join(output.get("text", "") for output in notebook.cells[2].outputs)
        self.assertIn("nn.py is here", printed)
        self.assertNotIn("missing", printed)


class TheCheckerItself(unittest.TestCase):
    """The block finder must find what a reader sees, or the test above proves nothing."""

    def test_finds_python_blocks_and_skips_the_others(self):
        text = ("intro\n```python\nprint(1)\n```\n\n```bash\nls\n```\n"
                "```ipython\n%%writefile nn.py\n```\n```python\nx = 2\n```\n")
        self.assertEqual([(language, line) for language, line, _ in code_blocks(text)],
                         [("python", 2), ("bash", 6), ("ipython", 9), ("python", 12)])
        self.assertEqual(code_blocks(text)[0][2], "print(1)\n")

    def test_a_block_runs_in_the_root_and_a_broken_one_fails(self):
        self.assertEqual(run_block("import nn; open('data/README.md').close()").returncode, 0)
        broken = run_block("from nn import NoSuchThing")
        self.assertNotEqual(broken.returncode, 0)
        self.assertIn("NoSuchThing", broken.stderr)


if __name__ == "__main__":
    unittest.main()

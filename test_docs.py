"""The documentation's code runs as printed: every ```python block of README.md and docs/*.md,
each on its own, in a fresh interpreter started in the repository's root, as a reader who
copies it would run it. Shell commands, output and notebook magics use other fences
(```bash, ```text, ```ipython) and are not run.

    python -m unittest test_docs -v
"""

import glob
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.abspath(__file__))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(path, ROOT)
                                   for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
TIME_LIMIT = 60          # seconds for one block; each takes about one
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text):
    """(language, first line number, code) of every fenced block of a Markdown text."""
    return [(match.group(1), text.count("\n", 0, match.start()) + 1, match.group(2))
            for match in FENCE.finditer(text)]


def run_block(code):
    """Run one block as a reader would: a fresh interpreter in the repository's root."""
    # The blocks are small: one BLAS thread runs them fastest, and does not slow down to a
    # crawl when other processes compete for the cores, as two spinning threads do.
    environment = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                       OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=TIME_LIMIT)


def read(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as file:
        return file.read()


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

"""Run a notebook top to bottom in a fresh kernel, as a learner would; fail on any cell error.

    python .ci/run_notebook.py walkthrough.ipynb           # CI: run it, keep the file as it is
    python .ci/run_notebook.py walkthrough.ipynb --save    # also write the outputs into the file

The kernel starts in the notebook's own folder, so `import nn` finds nn.py beside it, and runs
the Python that runs this script (jupyter's "python3" kernel is the ipykernel installed beside
that Python; the script fails if the kernel reports another Python version). Without
--save it first checks the file as stored: saved with the outputs of every code cell (so that
it reads on a repository page without running) and at most --max-mb. Exit status 0 when all
is well and every cell ran; 1 when a check failed, or a cell raised or ran past the timeout.
Needs nbclient, nbformat and ipykernel (.ci/run installs them).
"""

import argparse
import os
import platform
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError


def stored_problem(path, notebook, max_mb):
    """What is wrong with the notebook as stored, or None: it must be saved with the outputs
    of a run of every code cell, so that it reads without running, and stay small."""
    megabytes = os.path.getsize(path) / 1e6
    if megabytes > max_mb:
        return f"is {megabytes:.2f} MB, more than {max_mb} MB (smaller or fewer figures?)"
    unrun = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and cell.execution_count is None]
    if unrun:
        return f"is stored without the outputs of {len(unrun)} of its code cells"
    return None


def as_displayed(cell):
    """The cell's printed output as a notebook shows it, to be saved that way: consecutive
    prints to one stream joined, and each line redrawn with '\r' (fit's progress counter)
    replaced by what the redrawing leaves on screen."""
    outputs = []
    for output in cell.get("outputs", []):
        if (output.output_type == "stream" and outputs
                and outputs[-1].output_type == "stream" and outputs[-1].name == output.name):
            outputs[-1].text += output.text
        else:
            outputs.append(output)
    for output in outputs:
        if output.output_type == "stream" and "\r" in output.text:
            lines = []
            for line in output.text.split("\n"):
                shown = ""
                for part in line.split("\r"):       # each part is written over the line's start
                    shown = part + shown[len(part):]
                lines.append(shown)
            output.text = "\n".join(lines)
    cell.outputs = outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--timeout", type=int, default=300,
                        help="seconds any one cell may run (default: %(default)s)")
    parser.add_argument("--save", action="store_true",
                        help="write the fresh outputs back into the notebook")
    parser.add_argument("--max-mb", type=float, default=1.5,
                        help="largest size of the stored notebook, in MB (default: %(default)s)")
    args = parser.parse_args()

    path = os.path.abspath(args.notebook)
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:     # missing, unreadable, or not a notebook
        print(f"notebook: cannot read {args.notebook}: {error}")
        return 1
    if not args.save:                          # the committed file, as a repository page shows it
        problem = stored_problem(path, notebook, args.max_mb)
        if problem:
            print(f"notebook: {args.notebook} {problem}; run "
                  f"`python .ci/run_notebook.py {args.notebook} --save` and commit it")
            return 1
    client = NotebookClient(notebook, timeout=args.timeout, kernel_name="python3",
                            record_timing=False,
                            resources={"metadata": {"path": os.path.dirname(path)}})
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as error:
        print(re.sub(r"\x1b\[[0-9;]*m", "", str(error)), file=sys.stderr)   # no colour codes
        print(f"notebook: {args.notebook} FAILED after {time.perf_counter() - start:.0f} s")
        return 1
    seconds = time.perf_counter() - start
    cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    kernel_python = notebook.metadata.get("language_info", {}).get("version")  # the kernel's word
    if kernel_python != platform.python_version():
        print(f"notebook: the kernel ran Python {kernel_python}, not the Python of "
              f"{sys.executable} ({platform.python_version()}): install ipykernel into it")
        return 1
    print(f"notebook: {args.notebook} ran all {cells} code cells in {seconds:.0f} s "
          f"in a kernel of Python {kernel_python} ({sys.executable})")
    if args.save:
        for cell in notebook.cells:
            if cell.cell_type == "code":
                as_displayed(cell)
        nbformat.write(notebook, path)
        print(f"notebook: saved with its outputs, {os.path.getsize(path) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

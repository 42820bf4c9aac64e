"""How long from the end of a stroke on the drawing page to its new bars?

    python benchmarks/bench_draw.py                      # about a minute; a Markdown table
    python benchmarks/bench_draw.py --repeats 10 --models mlp
    python benchmarks/bench_draw.py --load model.npz     # a saved model instead

For each model it serves the page (draw.py) and opens it in headless Chromium (Debian's
chromium and chromium-driver, with Selenium), then, round after round, clears the pad, draws one
of the digits 0-9 of test_draw.py's strokes with pointer events dispatched in the page, and
times, in the browser, from the stroke's pointerup to the moment the page has drawn the answer
(the bars, the 28 x 28 and the why view): reading the pad, the request, the preparation of the
picture (pictures.prepare), predict and input_gradient on the server, and drawing the answer.
It also times the server's part alone (draw.read_drawing, in this process). Figures are medians
(and the 10th-90th percentiles) over the rounds.

The models are train_mnist.py's default MLP and --model cnn, untrained: the time does not
depend on the weights' values (--load times a trained one). Run it on an otherwise idle machine.
"""

import os
import shutil
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import draw                                                   # noqa: E402
import train_mnist                                            # noqa: E402
from flags import OneLineParser, whole_number                 # noqa: E402
from mnist_csv import load_model                              # noqa: E402
from test_draw import BOX, STROKES, browser                   # noqa: E402

# Dispatches one digit's strokes as pointer events, then resolves with the milliseconds from
# the last pointerup to the end of the page's show() of the answer to that drawing.
DRAW_AND_TIME = """
const [strokes, done] = arguments;
const pad = document.getElementById("pad"), box = pad.getBoundingClientRect();
const original = show;
let ended = 0;
show = (answer, asked) => {
  original(answer, asked);
  if (asked === version && ended) {                 // no digit read: no time to report
    show = original; done(answer && answer.digit !== null ? performance.now() - ended : null);
  }
};
const fire = (type, [x, y]) => pad.dispatchEvent(new PointerEvent(type, {
  pointerId: 1, pointerType: "mouse", isPrimary: true, bubbles: true, buttons: 1,
  clientX: box.left + x * box.width / pad.width, clientY: box.top + y * box.height / pad.height}));
pad.setPointerCapture = pad.releasePointerCapture = () => {};   // a synthetic pointer cannot
pad.hasPointerCapture = () => true;                              // be captured: pretend
document.getElementById("clear").click();
strokes.forEach((stroke, i) => {
  fire("pointerdown", stroke[0]);
  stroke.slice(1).forEach(point => fire("pointermove", point));
  if (i === strokes.length - 1) ended = performance.now();
  fire("pointerup", stroke[stroke.length - 1]);
});
"""
READ_PAD = """return [...ink.getImageData(0, 0, 280, 280).data].filter((v, i) => i % 4 == 0);"""


def on_pad(strokes):
    left, top, width, height = BOX
    return [[[left + x * width, top + y * height] for x, y in stroke] for stroke in strokes]


def summary(times):
    low, median, high = np.percentile(times, [10, 50, 90])
    return f"{median:.1f} ms ({low:.1f}-{high:.1f})"


def bench(name, net, chrome, repeats):
    server, url = draw.serve_in_background(net)
    try:
        chrome.get(url)
        chrome.set_script_timeout(30)
        page, pads = [], []                          # times; the pads of the first ten
        for round_ in range(repeats + 2):            # the first two warm up
            page.append(chrome.execute_async_script(DRAW_AND_TIME, on_pad(STROKES[round_ % 10])))
            if len(pads) < 10:
                pads.append(np.array(chrome.execute_script(READ_PAD), dtype=np.uint8)
                            .reshape(280, 280))
        page = page[2:]
        if None in page:
            raise RuntimeError("the page read no digit in a drawing: nothing was timed")
        # The server's part alone, on the same drawings, in this process.
        lock, server_times = threading.Lock(), []
        for round_ in range(repeats):
            started = time.perf_counter()
            draw.read_drawing(net, lock, pads[round_ % len(pads)])
            server_times.append(1000 * (time.perf_counter() - started))
    finally:
        server.shutdown()
        server.server_close()
    return f"| {name} | {summary(page)} | {summary(server_times)} |"


def main():
    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=whole_number(1), default=50,
                        help="timed strokes per model")
    parser.add_argument("--models", default="mlp,cnn", help="train_mnist.py's --model names")
    parser.add_argument("--load", action="append", default=[], metavar="PATH",
                        help="time a saved model (instead of --models; may be repeated)")
    args = parser.parse_args()
    unknown = sorted(set(args.models.split(",")) - set(train_mnist.BUILDERS))
    if unknown:
        parser.error(f"--models: {', '.join(unknown)} is not one of "
                     f"{', '.join(train_mnist.BUILDERS)}")
    if args.load:
        models = [(path, load_model(path)) for path in args.load]
    else:
        models = [(f"--model {name}", train_mnist.BUILDERS[name](train_mnist.parse_args(
            ["--model", name]))) for name in args.models.split(",")]
    chrome, why = browser()
    if chrome is None:
        sys.exit(f"error: {why}")
    try:
        print(f"round trip from the end of a stroke to new bars, median (10th-90th percentile) "
              f"of {args.repeats} strokes; load average {os.getloadavg()[0]:.1f}\n")
        print("| model | stroke to new bars (browser) | server's part (draw.read_drawing) |")
        print("| --- | --- | --- |")
        for name, net in models:
            print(bench(name, net, chrome, args.repeats), flush=True)
    finally:
        chrome.quit()
        shutil.rmtree(chrome.profile, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Draw a digit and watch the network read it: a page served on this machine (127.0.0.1 only)
where a learner draws with the mouse, a pen or a finger, or drops a picture file, and sees the
network's ten probabilities, the 28 x 28 picture it was given (prepared by pictures.prepare,
exactly as --predict prepares a picture) and why it answered so: the gradient of the answer's
probability with respect to those 784 pixels (Network.input_gradient).

    python train_mnist.py --draw                        # train, then serve the page
    python train_mnist.py --load model.npz --draw       # a saved model, MLP or CNN

    >>> server, url = serve_in_background(net)          # doctest: +SKIP
    >>> server.shutdown()                                # doctest: +SKIP

The server is the standard library's http.server. It answers two requests: GET / (the page: one HTML file, its
script inline, nothing fetched from the network) and POST /predict?width=W&height=H, whose body
is the picture's brightness, W * H bytes (0 black .. 255 white), row by row; the browser reads
the drawing or the dropped file into that. The answer is JSON. Nothing is read from or written
to the disk by a request.
"""

import copy
import http.server
import json
import sys
import threading
import urllib.parse

import numpy as np

from pictures import WORKING_SIDE, prepare

MAX_SIDE = WORKING_SIDE    # pixels: the longer side pictures.prepare works at; the page's script
                           # shrinks a dropped picture to it too (its own MAX_SIDE, the same)
MAX_BODY = MAX_SIDE * MAX_SIDE   # bytes: a larger request is refused (413) unread
TIMEOUT = 10               # seconds a client may keep a connection silent before it is closed


def read_drawing(net, lock, brightness):
    """The answer to one picture's brightness (a 2-D array): a dict for the page. digit is None
    when preparation found no ink; else the answer, the ten probabilities, the 784 pixels the
    network saw, and `why`: d P[answer] / d pixel, divided by its largest size (-1..1)."""
    digit = prepare(brightness).digit            # exactly as --predict prepares a picture
    if digit is None:
        return {"digit": None, "message": "no ink found: nothing stands out from the page"}
    with lock:                                   # the layers keep each pass's numbers: one
        probabilities = net.predict(digit[None])[0].astype(np.float64)     # pass at a time
        answer = int(probabilities.argmax())
        why = net.input_gradient(digit[None], answer).reshape(-1).astype(np.float64)
    if not (np.isfinite(probabilities).all() and np.isfinite(why).all()):
        raise ArithmeticError("the network's output is not a finite number")
    largest = np.abs(why).max()
    return {"digit": answer,
            "probabilities": (probabilities / probabilities.sum()).round(6).tolist(),
            "seen": digit.round(3).tolist(),
            "why": (why / largest if largest > 0 else why).round(3).tolist()}


def _brightness(query, body):
    """The body as a (height, width) array, from the query's width and height; ValueError
    saying what was expected and what came."""
    fields = urllib.parse.parse_qs(query)
    try:
        width, height = (int(fields[name][0]) for name in ("width", "height"))
    except (KeyError, ValueError):
        raise ValueError("expected /predict?width=W&height=H with whole numbers") from None
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"expected a width and a height from 1 to {MAX_SIDE}, "
                         f"got {width} x {height}")
    if len(body) != width * height:
        raise ValueError(f"expected {width} x {height} = {width * height:,} bytes of brightness, "
                         f"got {len(body):,}")
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width)


def make_server(net, port=0):
    """A ThreadingHTTPServer on 127.0.0.1:port (0: a free port) serving the page for net; its
    serve_forever() serves until shutdown(). Refuses a network that does not read 784 pixels
    into 10 probabilities."""
    outputs = net.predict(np.zeros((1, 784), dtype=np.float32))
    if outputs.shape != (1, 10):
        raise ValueError(f"the page shows a network of 784 pixels -> 10 digits; this one gives "
                         f"{outputs.shape[1:]} outputs")
    if outputs.min() < 0 or not np.isclose(outputs.sum(), 1, atol=1e-3):
        raise ValueError(f"the page shows probabilities (outputs >= 0 that add up to 1, as a "
                         f"last Softmax gives); this network gives {outputs[0].round(3)}")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = TIMEOUT                        # a silent client is dropped, not waited for

        def do_GET(self):
            if urllib.parse.urlsplit(self.path).path != "/":
                return self._send(404, {"error": "not found: the page is at /"})
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/predict":
                self.close_connection = True     # its body stays unread
                return self._send(404, {"error": "not found: POST to /predict"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                if length < 0:
                    return self._send(411, {"error": "expected a Content-Length"})
                return self._send(413, {"error": f"expected at most {MAX_BODY:,} bytes, "
                                                 f"got {length:,}"})
            body = self.rfile.read(length)
            try:
                answer = read_drawing(net, lock, _brightness(url.query, body))
            except ValueError as error:
                return self._send(400, {"error": str(error)})
            except ArithmeticError as error:
                return self._send(500, {"error": str(error)})
            self._send(200, answer)

        def _send(self, status, content, kind="application/json"):
            if isinstance(content, dict):
                content = json.dumps(content).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format, *args):    # no line on the terminal per request
            pass

    return _Server(("127.0.0.1", port), Handler)


class _Server(http.server.ThreadingHTTPServer):
    """Each client in a thread of its own, so a slow one keeps no other waiting."""
    daemon_threads = True                        # a client still connected does not hold exit

    def handle_error(self, request, client_address):
        """A client that went away or fell silent (OSError: reset, broken pipe, timeout)
        is no error of the server's: nothing printed. Anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def address(server):
    return f"http://127.0.0.1:{server.server_address[1]}/"


def serve(net, port=0):
    """Serve the page for net until Ctrl-C, which ends it quietly."""
    server = make_server(net, port)
    print(f"drawing page: {address(server)} (open it in a browser; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped the drawing page")
    finally:
        server.server_close()


def serve_in_background(net, port=0):
    """Serve the page from a thread, for a notebook: returns (server, url) at once. The page
    reads a copy of net as it is now, so that cells which go on training net run undisturbed.
    The server stops with server.shutdown()."""
    server = make_server(copy.deepcopy(net), port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, address(server)


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Draw a digit</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  p { margin: 4px 0 12px; color: #555; font-size: 14px; }
  main { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
  section { display: flex; flex-direction: column; gap: 8px; }
  h2 { font-size: 14px; margin: 0; font-weight: 600; }
  #pad { width: 280px; height: 280px; background: #fff; border: 1px solid #888;
         border-radius: 4px; touch-action: none; cursor: crosshair; }
  button { font-size: 14px; padding: 4px 12px; }
  #prediction { font-size: 40px; font-weight: 700; min-height: 48px; }
  #message { font-size: 13px; color: #a33; min-height: 18px; max-width: 280px; }
  .row { display: flex; align-items: center; gap: 6px; font: 13px monospace; }
  .track { width: 200px; height: 14px; background: #e6e6e6; border-radius: 2px; }
  .bar { height: 100%; width: 0; background: #4a7bd0; border-radius: 2px; }
  .row.answer .bar { background: #d0602f; }
  .value { width: 52px; text-align: right; }
  .pixels { width: 140px; height: 140px; image-rendering: pixelated; border: 1px solid #888;
            background: #000; }
  .legend { font-size: 12px; color: #555; max-width: 180px; }
  body.dropping #pad { outline: 3px dashed #4a7bd0; }
</style>
</head>
<body>
<h1>Draw a digit</h1>
<p>Draw one digit, 0 to 9, with the mouse, a pen or a finger, and watch the network read it.
Or drop a picture file of a digit anywhere on the page.</p>
<main>
  <section>
    <canvas id="pad" width="280" height="280" aria-label="drawing pad"></canvas>
    <div><button id="clear">Clear</button> <button id="undo">Undo stroke</button></div>
    <div id="message"></div>
  </section>
  <section>
    <h2>The network's answer</h2>
    <div id="prediction" data-version="0" aria-live="polite">&nbsp;</div>
    <div id="bars"></div>
  </section>
  <section>
    <h2>What it sees (28 &times; 28)</h2>
    <canvas id="seen" class="pixels" width="28" height="28"
            aria-label="the 28 x 28 picture the network sees"></canvas>
    <h2>Why</h2>
    <canvas id="why" class="pixels" width="28" height="28"
            aria-label="why: the gradient of the answer over the pixels"></canvas>
    <div class="legend" id="legend">The gradient of the answer's probability with respect to
      each pixel: more ink on a red pixel would raise it, on a blue pixel lower it.</div>
  </section>
</main>
<script>
"use strict";
const pad = document.getElementById("pad"), ink = pad.getContext("2d");
const prediction = document.getElementById("prediction"), message = document.getElementById("message");
const THROTTLE = 80;            // ms: at most one prediction this often while drawing
const LINE = 20;                // px: the pen's width on the 280 x 280 pad
let strokes = [], picture = null;             // what is drawn: strokes over a dropped picture
let version = 0, sent = 0, busy = false, timer = null, last = 0;

// Ten bars, one per digit.
const bars = [], values = [], rows = [];
for (let d = 0; d < 10; d++) {
  const row = document.createElement("div");
  row.className = "row";
  row.innerHTML = `<span>${d}</span><div class="track"><div class="bar"></div></div>` +
                  `<span class="value"></span>`;
  document.getElementById("bars").append(row);
  rows.push(row); bars.push(row.querySelector(".bar")); values.push(row.querySelector(".value"));
}

function redraw() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  if (picture) {                               // fitted into the pad, centred
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const w = picture.width * scale, h = picture.height * scale;
    ink.drawImage(picture, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  ink.strokeStyle = "#000"; ink.fillStyle = "#000";
  ink.lineWidth = LINE; ink.lineCap = "round"; ink.lineJoin = "round";
  for (const stroke of strokes) {
    ink.beginPath();
    ink.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke) ink.lineTo(x, y);
    ink.stroke();
  }
}

function point(event) {                        // the pointer on the pad's 280 x 280 pixels
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", event => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  strokes.push([point(event)]);
  changed();
});
pad.addEventListener("pointermove", event => {
  if (!pad.hasPointerCapture(event.pointerId) || !strokes.length) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) strokes[strokes.length - 1].push(point(e));
  changed();
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, event => {
    if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
    changed(true);
  });
}
document.getElementById("clear").onclick = () => { strokes = []; picture = null; changed(true); };
document.getElementById("undo").onclick = () => { strokes.pop(); changed(true); };

// A change asks for a prediction: at once when the stroke ends, else at most every THROTTLE
// ms, and never two at a time (the newest drawing is sent when the answer comes back).
function changed(now) {
  version++;
  redraw();
  clearTimeout(timer);
  const wait = now ? 0 : Math.max(0, THROTTLE - (performance.now() - last));
  timer = setTimeout(send, wait);
}

function send() {
  if (busy || sent === version) return;
  if (!strokes.length && !picture) { show(null, version); return; }
  const pixels = ink.getImageData(0, 0, pad.width, pad.height).data;
  const brightness = new Uint8Array(pad.width * pad.height);
  for (let i = 0; i < brightness.length; i++) brightness[i] = pixels[4 * i];   // grey: red
  ask(brightness, pad.width, pad.height, version);
}

async function ask(brightness, width, height, asked) {
  busy = true; sent = asked; last = performance.now();
  try {
    const response = await fetch(`predict?width=${width}&height=${height}`,
                                 {method: "POST", body: brightness});
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    show(answer, asked);
  } catch (error) {
    message.textContent = "could not predict: " + error.message;
  } finally {
    busy = false;
    if (sent !== version) timer = setTimeout(send, Math.max(0, THROTTLE - (performance.now() - last)));
  }
}

// Percentages to one decimal that add up to 100.0 (largest remainders get the last tenths).
function percentages(probabilities) {
  const tenths = probabilities.map(p => p * 1000), whole = tenths.map(Math.floor);
  let left = 1000 - whole.reduce((a, b) => a + b, 0);
  const order = tenths.map((t, i) => [t - whole[i], i]).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) { if (left-- <= 0) break; whole[i]++; }
  return whole.map(t => t / 10);
}

function show(answer, asked) {
  const found = answer && answer.digit !== null;
  message.textContent = answer && !found ? answer.message : "";
  prediction.textContent = found
    ? `${answer.digit} (${(100 * answer.probabilities[answer.digit]).toFixed(1)}%)` : "\u00a0";
  const shown = found ? percentages(answer.probabilities) : Array(10).fill(0);
  for (let d = 0; d < 10; d++) {
    bars[d].style.width = `${shown[d]}%`;
    bars[d].dataset.probability = found ? answer.probabilities[d] : 0;
    values[d].textContent = found ? `${shown[d].toFixed(1)}%` : "";
    rows[d].classList.toggle("answer", found && d === answer.digit);
  }
  paint("seen", found ? answer.seen : null, v => [255 * v, 255 * v, 255 * v, 255]);
  paint("why", found ? answer.why : null, (g, i) => {   // red towards, blue away, over the digit
    const grey = 110 * answer.seen[i], a = Math.abs(g);
    return g > 0 ? [grey + (255 - grey) * a, grey * (1 - a), grey * (1 - a), 255]
                 : [grey * (1 - a), grey * (1 - a) + 60 * a, grey + (255 - grey) * a, 255];
  });
  if (found) {
    document.getElementById("legend").textContent = `The gradient of the probability of ` +
      `${answer.digit} with respect to each pixel: more ink on a red pixel would make the ` +
      `network surer of ${answer.digit}, on a blue pixel less sure.`;
  }
  prediction.dataset.version = asked;
}

function paint(id, values, colour) {
  const canvas = document.getElementById(id), context = canvas.getContext("2d");
  const image = context.createImageData(28, 28);
  if (values) values.forEach((v, i) => image.data.set(colour(v, i), 4 * i));
  context.putImageData(image, 0, 0);
  canvas.dataset.drawn = values ? "yes" : "";
}

// A picture dropped on the page: the browser decodes it, shrunk to MAX_SIDE pixels a side at
// most, and its brightness is sent like a drawing's. See-through pixels show a page that
// contrasts with what is drawn on them, as pictures.py reads such a file.
const MAX_SIDE = 1000, LUMA = [0.299, 0.587, 0.114];
document.addEventListener("dragover", event => {
  event.preventDefault(); document.body.classList.add("dropping");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
document.addEventListener("drop", async event => {
  event.preventDefault();
  document.body.classList.remove("dropping");
  const file = event.dataTransfer.files[0];
  if (file) await readPicture(file);
});

async function readPicture(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    message.textContent = `${file.name}: not a picture this browser can read`;
    return;
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height), context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const colour = new Float32Array(width * height), opacity = new Float32Array(width * height);
  let drawn = 0, drawnColour = 0;
  for (let i = 0; i < colour.length; i++) {
    colour[i] = (LUMA[0] * rgba[4 * i] + LUMA[1] * rgba[4 * i + 1] + LUMA[2] * rgba[4 * i + 2]) / 255;
    opacity[i] = rgba[4 * i + 3] / 255;
    if (opacity[i] > 0.5) { drawn++; drawnColour += colour[i]; }
  }
  const page = !drawn || drawnColour / drawn < 0.5 ? 1 : 0;
  const brightness = new Uint8Array(width * height);
  for (let i = 0; i < colour.length; i++) {
    brightness[i] = Math.round(255 * (opacity[i] * colour[i] + (1 - opacity[i]) * page));
  }
  strokes = []; picture = bitmap; version++; redraw();
  message.textContent = "";
  clearTimeout(timer);
  ask(brightness, width, height, version);
}

redraw();
</script>
</body>
</html>
"""

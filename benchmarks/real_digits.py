"""Does `train_mnist.py --predict` read digits that never were MNIST digits? Two kinds of
pictures, written as image files, read back through --predict's preparation, and scored:

  other writers  handwritten digits by 43 writers who are not MNIST's: the UCI "optical
                 recognition of handwritten digits" set as scikit-learn ships it (load_digits,
                 1,797 digits of 8x8 ink counts), each enlarged to 24-48 pixels a side and drawn
                 as dark ink on white, cropped tight: the ink touches the picture's edges, as
                 after cropping a photo to the digit;
  phone-like     digits drawn here from stroke paths (a pen's path for each digit, bent, slanted,
                 turned and sized at random), on phone-sized pages (480 to 800 pixels a side)
                 with paper grain and camera noise, half of them saved as JPEG, in these kinds:
                   pen           a ballpoint pen on white paper (the clean case to compare with)
                   pencil        a thin grey pencil line with grain
                   marker        a thick black marker
                   shadow        pen or pencil under light that falls by 30% across the page
                   desk          a white sheet, turned a little, on a darker desk
                   lined         lined notebook paper (blue rules, a red margin)
                   squared       squared notebook paper
                   tight         pen on white, cropped to the ink
               and in the harder conditions a phone meets:
                   dim           low light: a dim, warm picture, darker corners, high-ISO noise
                   thumb         a thumb, or the desk beyond the sheet, at one border
                   far           a small digit far from the middle of a page, specks nearby
                   glare         marker on a whiteboard under a glare spot
                   boxed         a printed box around the digit, or a hand-drawn underline

    python train_mnist.py --save /tmp/mlp.npz                    # the default model
    python train_mnist.py --model cnn --save /tmp/cnn.npz        # the CNN, about a minute
    python benchmarks/real_digits.py --load /tmp/mlp.npz /tmp/cnn.npz

It needs scikit-learn for the other writers' digits (pip install scikit-learn); nothing is
downloaded. It prints, for each kind and model, the share read right and the pictures refused.
--code FOLDER reads the pictures with the train_mnist.py (and pictures.py) of another checkout,
to compare versions on the very same pictures; --keep FOLDER keeps the pictures.
"""

import importlib
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))

import photo_digits  # noqa: E402  (beside this file: its way of saving pictures)
from flags import OneLineParser, whole_number  # noqa: E402  (photo_digits put it on the path)

PHONE_KINDS = ("pen", "pencil", "marker", "shadow", "desk", "lined", "squared", "tight")
CONDITION_KINDS = ("dim", "thumb", "far", "glare", "boxed")

# A pen's path for each digit, in a box 1 wide and 1 tall (y down): strokes of points that a
# smooth curve passes through. Corners are where one stroke ends and the next begins.
STROKES = {
    0: [[(0.5, 0.02), (0.18, 0.2), (0.12, 0.55), (0.3, 0.92), (0.6, 0.96), (0.85, 0.7),
         (0.86, 0.3), (0.62, 0.04), (0.48, 0.03)]],
    1: [[(0.58, 0.02), (0.52, 0.5), (0.46, 0.98)]],
    2: [[(0.15, 0.28), (0.35, 0.06), (0.65, 0.04), (0.82, 0.25), (0.7, 0.5), (0.38, 0.75),
         (0.12, 0.96)], [(0.12, 0.96), (0.5, 0.93), (0.9, 0.95)]],
    3: [[(0.15, 0.12), (0.45, 0.02), (0.78, 0.15), (0.72, 0.38), (0.42, 0.48)],
        [(0.42, 0.48), (0.8, 0.6), (0.82, 0.82), (0.55, 0.97), (0.15, 0.88)]],
    4: [[(0.55, 0.02), (0.3, 0.4), (0.1, 0.68)], [(0.1, 0.68), (0.5, 0.66), (0.92, 0.64)],
        [(0.7, 0.3), (0.69, 0.65), (0.68, 0.99)]],
    5: [[(0.85, 0.03), (0.5, 0.04), (0.25, 0.05)], [(0.25, 0.05), (0.22, 0.25), (0.2, 0.46)],
        [(0.2, 0.46), (0.55, 0.38), (0.82, 0.58), (0.78, 0.85), (0.5, 0.98), (0.15, 0.88)]],
    6: [[(0.72, 0.02), (0.4, 0.25), (0.2, 0.6), (0.3, 0.92), (0.6, 0.95), (0.8, 0.75),
         (0.65, 0.52), (0.35, 0.55), (0.22, 0.7)]],
    7: [[(0.1, 0.06), (0.5, 0.04), (0.9, 0.03)], [(0.9, 0.03), (0.65, 0.45), (0.42, 0.98)]],
    8: [[(0.52, 0.47), (0.25, 0.28), (0.45, 0.03), (0.75, 0.2), (0.52, 0.47), (0.22, 0.72),
         (0.45, 0.97), (0.8, 0.78), (0.52, 0.47)]],
    9: [[(0.78, 0.25), (0.5, 0.03), (0.2, 0.2), (0.32, 0.45), (0.62, 0.42), (0.78, 0.25)],
        [(0.78, 0.25), (0.74, 0.6), (0.7, 0.99)]],
}


def smooth(points, steps=12):
    """A Catmull-Rom curve through the points: a pen's smooth path."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return points
    padded = np.vstack([points[0], points, points[-1]])
    curve = []
    for p0, p1, p2, p3 in zip(padded, padded[1:], padded[2:], padded[3:]):
        t = np.linspace(0, 1, steps, endpoint=False)[:, None]
        curve.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                            + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    return np.vstack(curve + [points[-1:]])


def drawn_digit(digit, rng, height, width):
    """The strokes of one digit, bent and placed at random: a list of (n, 2) arrays of (x, y)
    pixel positions, for a digit `height` pixels tall and about `width` wide."""
    slant, turn = rng.uniform(-0.3, 0.15), rng.uniform(-0.12, 0.12)
    strokes = []
    for stroke in STROKES[digit]:
        points = np.asarray(stroke) + rng.normal(0, 0.025, (len(stroke), 2))
        points[:, 0] += slant * (0.5 - points[:, 1])               # a slant to the right
        points = smooth(points) - 0.5
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        strokes.append(points @ rotation.T * [width, height])
    return strokes


def ink_layer(strokes, size, pen_width, centre, supersample=2):
    """The strokes drawn as ink (0..1) on a page of `size` (width, height), anti-aliased."""
    big = Image.new("L", (size[0] * supersample, size[1] * supersample), 0)
    draw = ImageDraw.Draw(big)
    width = max(1, round(pen_width * supersample))
    for stroke in strokes:
        points = [tuple(float(v) for v in (point + centre) * supersample) for point in stroke]
        draw.line(points, fill=255, width=width, joint="curve")
        for point in (points[0], points[-1]):                      # round pen tips
            draw.ellipse([point[0] - width / 2, point[1] - width / 2,
                          point[0] + width / 2, point[1] + width / 2], fill=255)
    small = big.resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255


def lighting(shape, rng, fall=0.3):
    """Light that falls linearly by `fall` across the page in a random direction (1 at best)."""
    height, width = shape
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    along = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    along = (along - along.min()) / (along.max() - along.min())
    return 1 - fall * along


def phone_picture(digit, kind, rng):
    """One digit as a phone-like picture of the given kind: an RGB array (height, width, 3)."""
    width, height = (int(v) for v in rng.integers(480, 801, size=2))
    tall = rng.uniform(0.3, 0.6) * min(width, height)
    centre = np.array([width, height]) * rng.uniform(0.4, 0.6, size=2)
    if kind == "far":           # a small digit well away from the middle of the page
        width, height = (int(v) for v in rng.integers(1200, 2001, size=2))
        tall = rng.uniform(0.07, 0.14) * min(width, height)
        away = rng.uniform(0.15, 0.3) * rng.choice([-1, 1], size=2)
        centre = np.array([width, height]) * (0.5 + away)
    strokes = drawn_digit(digit, rng, tall, tall * rng.uniform(0.55, 0.8))
    paper = np.array([240, 238, 230]) + rng.normal(0, 4, 3)
    if kind == "glare":         # a whiteboard: greyer than paper, lit unevenly
        paper = np.array([215, 218, 220]) + rng.normal(0, 4, 3)
    pen_width, ink_colour, strength = tall * rng.uniform(0.04, 0.07), [25, 30, 80], 0.9
    if kind == "pencil" or (kind in ("shadow", "lined", "squared") and rng.random() < 0.5):
        pen_width, ink_colour, strength = rng.uniform(1.5, 3.0), [60, 60, 65], rng.uniform(0.5, 0.7)
    elif kind in ("marker", "glare"):
        pen_width, ink_colour, strength = tall * rng.uniform(0.12, 0.18), [15, 15, 15], 0.95
    page = np.broadcast_to(paper, (height, width, 3)).astype(np.float64).copy()
    if kind in ("lined", "squared"):
        gap = int(rng.integers(22, 36))
        rules = np.zeros((height, width))
        rules[int(rng.integers(0, gap))::gap] = 1
        if kind == "squared":
            rules[:, int(rng.integers(0, gap))::gap] = 1
        else:
            margin = int(width * rng.uniform(0.08, 0.15))
            page[:, margin:margin + 2] = [220, 120, 120]           # the red margin line
        page += rules[..., None] * ([150, 180, 225] - page) * rng.uniform(0.5, 0.9)
    if kind == "boxed":         # a printed box around the digit, or an underline drawn under it
        half = np.array([tall * 0.5, tall * 0.5]) * rng.uniform(1.15, 1.45, size=2)
        if rng.random() < 0.5:
            corners = [centre - half, centre + [half[0], -half[1]], centre + half,
                       centre + [-half[0], half[1]], centre - half]
            strokes = strokes + [np.array(corners) - centre]
        else:
            y = tall * rng.uniform(0.6, 0.72)
            strokes = strokes + [np.array([[-tall * 0.5, y], [0, y + rng.normal(0, 3)],
                                           [tall * 0.5, y + rng.normal(0, 3)]])
                                 * [rng.uniform(0.9, 1.3), 1]]
    if kind == "far":           # specks of dust or dirt, a few near the digit
        for _ in range(int(rng.integers(3, 9))):
            spot = centre + rng.normal(0, tall * 1.2, 2)
            strokes = strokes + [np.array([spot, spot + rng.normal(0, 1, 2)]) - centre]
    ink = ink_layer(strokes, (width, height), pen_width, centre)
    if kind == "pencil" or pen_width < 3.5:                       # graphite's grain
        ink *= np.clip(rng.normal(1, 0.25, ink.shape), 0.3, 1)
    picture = page + (strength * ink)[..., None] * (np.asarray(ink_colour) - page)
    if kind == "desk":
        desk = np.array([95, 70, 50]) * rng.uniform(0.6, 1.3) + rng.normal(0, 6, (height, width, 3))
        sheet = Image.new("L", (width, height), 0)
        inset = rng.uniform(0.08, 0.2, size=4) * [width, height, width, height]
        corners = np.array([[inset[0], inset[1]], [width - inset[2], inset[1]],
                            [width - inset[2], height - inset[3]], [inset[0], height - inset[3]]])
        turn = rng.uniform(-0.12, 0.12)
        middle = corners.mean(axis=0)
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        corners = (corners - middle) @ rotation.T + middle
        ImageDraw.Draw(sheet).polygon([tuple(c) for c in corners], fill=255)
        on_sheet = np.asarray(sheet.filter(ImageFilter.GaussianBlur(1)), np.float64)[..., None] / 255
        picture = on_sheet * picture + (1 - on_sheet) * desk
        picture *= lighting((height, width), rng, fall=0.15)[..., None]
    if kind == "shadow":
        picture *= lighting((height, width), rng)[..., None]
    if kind == "thumb":         # a thumb, or the desk beyond the sheet, at one border
        ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
        side = int(rng.integers(4))
        across = [ys, 1 - ys, xs, 1 - xs][side]                 # 0 at that border
        along = [xs, xs, ys, ys][side]
        if rng.random() < 0.5:  # a thumb: a rounded, shaded skin-coloured tip
            reach, middle = rng.uniform(0.18, 0.3), rng.uniform(0.2, 0.8)
            inside = (across / reach) ** 2 + ((along - middle) / rng.uniform(0.1, 0.16)) ** 2
            thing = (np.clip((1 - inside) * 8, 0, 1))[..., None]
            shade = 0.7 + 0.3 * (1 - inside.clip(0, 1))              # darker at its rim
            colour = np.array([200, 140, 115]) * rng.uniform(0.5, 0.9) * shade[..., None]
        else:                   # the desk's edge, a little skewed
            reach = rng.uniform(0.06, 0.16) + (along - 0.5) * rng.uniform(-0.05, 0.05)
            thing = np.clip((reach - across) * 300, 0, 1)[..., None]
            colour = np.array([95, 70, 50]) * rng.uniform(0.4, 1.2)
        picture = thing * colour + (1 - thing) * picture
    if kind == "glare":         # a bright spot washing out board and ink alike
        ys, xs = np.mgrid[0:height, 0:width]
        spot = centre + rng.normal(0, tall * 0.5, 2)
        radius = rng.uniform(0.06, 0.16) * min(width, height)
        glare = np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * radius ** 2))
        picture += (255 - picture) * (rng.uniform(0.75, 1.0) * glare)[..., None]
        picture *= (0.85 + 0.15 * lighting((height, width), rng))[..., None]
    noise = 5
    if kind == "dim":           # a tenth to a third of the light, warm, darker corners
        ys, xs = np.mgrid[0:height, 0:width]
        corners = ((ys / height - 0.5) ** 2 + (xs / width - 0.5) ** 2) * 2
        warm = np.array([1.0, 0.85, 0.6])
        picture *= rng.uniform(0.12, 0.35) * warm * (1 - 0.6 * corners)[..., None]
        noise = rng.uniform(4, 9)                                 # high ISO
    picture += rng.normal(0, noise, (height, width, 1))           # the camera's noise
    picture = np.clip(picture, 0, 255)
    if kind == "tight":
        inked = np.argwhere(ink > 0.5)
        (top, left), (bottom, right) = inked.min(axis=0), inked.max(axis=0)
        picture = picture[top:bottom + 1, left:right + 1]
    return picture.round().astype(np.uint8)


def other_writers_picture(image, rng):
    """One of load_digits' 8x8 digits (ink counts 0..16) as a small picture of dark ink on
    white, enlarged and cropped so that the ink touches the edges."""
    size = int(rng.integers(24, 49))
    ink = Image.fromarray((np.asarray(image) * 255 / 16).astype(np.uint8))
    ink = np.asarray(ink.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    inked = np.argwhere(ink > 0.35)
    (top, left), (bottom, right) = inked.min(axis=0), inked.max(axis=0)
    ink = ink[top:bottom + 1, left:right + 1]
    gray = 245 - ink * 215 + rng.normal(0, 3, ink.shape)
    return np.clip(gray, 0, 255).round().astype(np.uint8)


def save(array, path_without_suffix, rng, jpeg_share=0.5):
    """Write the picture as PNG, or as JPEG (quality 50 to 89) with the chance `jpeg_share`;
    returns its path."""
    kind = "JPEG" if rng.random() < jpeg_share else "PNG"
    return photo_digits.save(Image.fromarray(array), kind, path_without_suffix, rng)


def make_pictures(folder, count, seed):
    """Write the benchmark's pictures; returns [(path, label, kind)]."""
    from sklearn.datasets import load_digits
    rng = np.random.default_rng(seed)
    pictures = []
    writers = load_digits()
    chosen = rng.permutation(len(writers.target))[:count]
    for number, index in enumerate(chosen):
        label = int(writers.target[index])
        path = save(other_writers_picture(writers.images[index], rng),
                    os.path.join(folder, f"writers-{number:04d}-{label}"), rng, jpeg_share=0)
        pictures.append((path, label, "other writers"))
    for kind in PHONE_KINDS + CONDITION_KINDS:
        for number in range(count // 5):
            label = number % 10
            path = save(phone_picture(label, kind, rng),
                        os.path.join(folder, f"{kind}-{number:04d}-{label}"), rng)
            pictures.append((path, label, kind))
    return pictures


def reader(code):
    """read_image and DataError from the checkout at `code` (pictures.py; readers.py or
    train_mnist.py in older checkouts), and its train_mnist module."""
    for name in ("train_mnist", "pictures", "mnist_csv", "flags", "readers", "outputs", "nn"):
        sys.modules.pop(name, None)                  # photo_digits imported ours
    sys.path.insert(0, code)
    train_mnist = importlib.import_module("train_mnist")
    for name in ("pictures", "readers"):
        try:
            module = importlib.import_module(name)
            return module.read_image, module.DataError, train_mnist
        except ImportError:
            pass
    return train_mnist.read_image, train_mnist.DataError, train_mnist


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", nargs="+", required=True, metavar="MODEL",
                        help="models saved by train_mnist.py --save, each scored")
    parser.add_argument("--count", type=whole_number(5, 1797, "(scikit-learn's digits)"),
                        default=500,
                        help="other writers' digits; each phone-like kind gets a fifth of this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pictures")
    parser.add_argument("--code", default=os.path.dirname(HERE), metavar="FOLDER",
                        help="the checkout whose preparation reads the pictures (default: this one)")
    parser.add_argument("--keep", metavar="FOLDER", help="write the pictures here and keep them")
    args = parser.parse_args(argv)
    photo_digits.check_keep(parser, args.keep)
    if importlib.util.find_spec("sklearn") is None:
        parser.error("the other writers' digits need scikit-learn: pip install scikit-learn")
    read_image, DataError, train_mnist = reader(os.path.abspath(args.code))
    try:
        nets = [train_mnist.Network.load(path) for path in args.load]
    except (DataError, ValueError, OSError) as error:
        parser.error(f"--load: {photo_digits.mnist_csv.printable(error)}")

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        started = time.perf_counter()
        pictures = make_pictures(folder, args.count, args.seed)
        made = time.perf_counter() - started
        prepared = np.zeros((len(pictures), 784), dtype=np.float32)
        refused = np.zeros(len(pictures), dtype=bool)
        reasons = {}
        for number, (path, _, kind) in enumerate(pictures):
            try:
                prepared[number] = read_image(path)
            except DataError as error:
                refused[number] = True
                reason = str(error).split(": ", 1)[-1].split(";")[0]
                reasons.setdefault(kind, {}).setdefault(reason, 0)
                reasons[kind][reason] += 1
        read = time.perf_counter() - started - made

    labels = np.array([label for _, label, _ in pictures])
    kinds = np.array([kind for _, _, kind in pictures])
    answers = [net.predict(prepared).argmax(axis=1) for net in nets]
    print(f"{len(pictures):,} pictures (made in {made:.1f} s, read and prepared in {read:.1f} s, "
          f"{1000 * read / len(pictures):.1f} ms each) with the preparation of {args.code}")
    names = [os.path.basename(path) for path in args.load]
    print("| kind | pictures | refused | " + " | ".join(f"right, {name}" for name in names)
          + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    groups = {"all phone-like": PHONE_KINDS, "all harder conditions": CONDITION_KINDS}
    for kind in ["other writers", *PHONE_KINDS, "all phone-like", *CONDITION_KINDS,
                 "all harder conditions"]:
        chosen = np.isin(kinds, groups.get(kind, [kind]))
        cells = [f"{100 * np.mean((answer == labels)[chosen] & ~refused[chosen]):.1f}%"
                 for answer in answers]
        print(f"| {kind} | {np.count_nonzero(chosen)} | {np.count_nonzero(refused[chosen])} | "
              + " | ".join(cells) + " |")
    for kind, counts in reasons.items():
        print(f"refused, {kind}: " + "; ".join(f"{n} {reason}" for reason, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does `train_mnist.py --predict` read digits from photos and drawings? A test set made from
MNIST's own test digits, changed the ways people's pictures differ from MNIST, written as
image files, read back through --predict's preparation, and scored.

    python train_mnist.py --save model.npz                   # a model trained with the defaults
    python benchmarks/photo_digits.py --load model.npz       # 1,000 pictures, about a minute

Without --load it first trains a model with the defaults. Each of the first N test digits
becomes one picture:
  enlarged  from 28x28 to 280x280 pixels (bicubic);
  strokes   a third as they are, a third thicker (MaxFilter(9) on the light ink: 4 pixels more
            on each side, 0.4 of an MNIST pixel), a third thinner (MinFilter(7): 3 fewer);
  canvas    pasted at a random place on a larger page (300 to 479 pixels a side): off-centre;
  ink       three in four dark (a navy pen) on light paper, one in four light on a dark page;
  noise     Gaussian, standard deviation 10 (of 255), on every pixel of the page;
  format    a quarter each: grayscale PNG, RGB PNG, RGBA PNG (ink in the alpha channel of a
            transparent page, no noise, as drawing apps save), JPEG (quality 50 to 89).
It prints the accuracy on the pictures, next to the accuracy on the same digits as MNIST has
them, per kind of change; and how close the prepared 28x28 of a digit that is merely enlarged
and inverted comes to the original.
"""

import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import mnist_csv  # noqa: E402
import pictures  # noqa: E402
import train_mnist  # noqa: E402
from flags import OneLineParser, whole_number  # noqa: E402

FORMATS = ("gray PNG", "RGB PNG", "RGBA PNG", "JPEG")
PAPER, PEN = np.array([235, 230, 220]), np.array([30, 30, 90])        # light page, navy ink
DARK_PAGE, CHALK = np.array([20, 20, 20]), np.array([240, 240, 240])  # dark page, light ink


def enlarged(digit, inverted=False):
    """An MNIST digit (784 values 0-255) as a 280x280 grayscale image, optionally inverted to
    dark ink on white."""
    image = Image.fromarray(np.asarray(digit, dtype=np.uint8).reshape(28, 28))
    image = image.resize((280, 280), Image.Resampling.BICUBIC)
    return Image.eval(image, lambda value: 255 - value) if inverted else image


def photo_like(digit, rng):
    """One MNIST digit as a picture a person might take or draw; returns (image, format,
    description), format being one of FORMATS (JPEG still to be compressed when saved)."""
    image = enlarged(digit)
    strokes = rng.choice(["as drawn", "thicker", "thinner"])
    if strokes == "thicker":
        image = image.filter(ImageFilter.MaxFilter(9))
    elif strokes == "thinner":
        image = image.filter(ImageFilter.MinFilter(7))
    width, height = (int(size) for size in rng.integers(300, 480, size=2))
    top, left = int(rng.integers(0, height - 279)), int(rng.integers(0, width - 279))
    ink = np.zeros((height, width))
    ink[top:top + 280, left:left + 280] = np.asarray(image, dtype=np.float64) / 255
    dark_ink = rng.random() < 0.75
    page, pen = (PAPER, PEN) if dark_ink else (DARK_PAGE, CHALK)
    kind = FORMATS[int(rng.integers(len(FORMATS)))]
    description = f"{strokes}, {'dark ink on paper' if dark_ink else 'light ink on dark'}, {kind}"
    if kind == "RGBA PNG":
        rgba = np.concatenate([np.broadcast_to(pen, (height, width, 3)), ink[..., None] * 255], 2)
        return Image.fromarray(rgba.round().astype(np.uint8), "RGBA"), kind, description
    rgb = page + ink[..., None] * (pen - page) + rng.normal(0, 10, (height, width, 1))
    image = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")
    return (image.convert("L") if kind == "gray PNG" else image), kind, description


def save(image, kind, path_without_suffix, rng):
    """Write the picture as PNG or JPEG; returns its path."""
    if kind == "JPEG":
        path = path_without_suffix + ".jpg"
        image.save(path, quality=int(rng.integers(50, 90)))
    else:
        path = path_without_suffix + ".png"
        image.save(path, compress_level=1)      # fast: the same pixels, a larger file
    return path


def enlarged_and_inverted(digits):
    """Each digit only enlarged to 280x280 and inverted, then prepared as --predict does."""
    return np.stack([pictures.prepare(np.asarray(enlarged(digit, inverted=True),
                                                 dtype=np.float64)).digit
                     for digit in digits])


def check_keep(parser, folder):
    """--keep writes new pictures only: a folder that holds files already is refused."""
    if folder and os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        parser.error(f"--keep {mnist_csv.printable(folder)}: is a file or a folder that holds "
                     f"files already; name a new or empty folder (nothing is written over)")


def percent(right):
    return f"{100 * np.mean(right):.1f}% ({np.count_nonzero(right):,} of {len(right):,})"


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", metavar="PATH", help="the model (default: train one with the "
                                                       "defaults of train_mnist.py first)")
    parser.add_argument("--count", type=whole_number(1, 10_000, "(MNIST's test digits)"),
                        default=1000, help="pictures (the first N test digits)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random changes")
    parser.add_argument("--keep", metavar="FOLDER", help="write the pictures here and keep them")
    args = parser.parse_args(argv)
    check_keep(parser, args.keep)
    try:
        return run(args)
    except mnist_csv.DataError as error:
        print(f"error: {mnist_csv.printable(error)}", file=sys.stderr)
        return 1


def run(args):
    with tempfile.TemporaryDirectory() as scratch:
        model = args.load
        if model is None:
            print("training a model with the defaults: python train_mnist.py --save ...")
            model = os.path.join(scratch, "model.npz")
            if train_mnist.main(["--save", model, "--quiet"]) != 0:
                return 1
        net = mnist_csv.load_model(model)
        pixels, labels = mnist_csv.load_mnist_csv(train_mnist.DEFAULT_TEST)
        pixels, labels = pixels[:args.count], labels[:args.count]
        digits = np.rint(pixels * 255)
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)

        rng = np.random.default_rng(args.seed)
        started = time.perf_counter()
        paths, descriptions = [], []
        for number, digit in enumerate(digits):
            image, kind, description = photo_like(digit, rng)
            paths.append(save(image, kind, os.path.join(folder, f"{number:05d}-{labels[number]}"),
                              rng))
            descriptions.append(description)
        made = time.perf_counter() - started
        prepared, read_ok = np.zeros((len(paths), 784), dtype=np.float32), np.ones(len(paths), bool)
        for number, path in enumerate(paths):
            try:
                prepared[number] = pictures.read_image(path)
            except mnist_csv.DataError:        # refused (no ink found): counted as wrong
                read_ok[number] = False
        read = time.perf_counter() - started - made

    right = (net.predict(prepared).argmax(axis=1) == labels) & read_ok
    mnist_answers = net.predict(pixels).argmax(axis=1)
    mnist_right = mnist_answers == labels
    print(f"\n{len(paths):,} photo-like pictures of the first MNIST test digits (made in "
          f"{made:.1f} s, read and prepared in {read:.1f} s; {np.count_nonzero(~read_ok)} refused)")
    print(f"right on the pictures: {percent(right)}; on the same digits as MNIST has them: "
          f"{percent(mnist_right)}")
    for position, heading in enumerate(("strokes", "ink", "format")):
        kinds = np.array([description.split(", ")[position] for description in descriptions])
        print(f"by {heading}: " + "; ".join(f"{kind} {percent(right[kinds == kind])}"
                                           for kind in sorted(set(kinds))))
    plain = enlarged_and_inverted(digits)
    difference = np.abs(plain - pixels)
    means, largest = difference.mean(axis=1), difference.max(axis=1)
    same = net.predict(plain).argmax(axis=1) == mnist_answers
    shifted = np.abs(np.roll(pixels.reshape(-1, 28, 28), 1, axis=2).reshape(-1, 784) - pixels)
    print(f"\nenlarged to 280x280 and inverted, nothing else: the prepared 28x28 differs from "
          f"MNIST's by {means.mean():.3f} per pixel on average (pixels in [0, 1]; median digit "
          f"{np.median(means):.3f}, worst {means.max():.3f}); the largest single-pixel "
          f"difference is {np.median(largest):.2f} for the median digit; the network answers "
          f"as it does for the original on {percent(same)}")
    print(f"for scale: a digit moved by one pixel differs from itself by "
          f"{shifted.mean(axis=1).mean():.3f} per pixel on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())

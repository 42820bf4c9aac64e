"""Tests for pictures.py: a picture of a digit (a drawing, a scan, a phone photo) read and
prepared as MNIST's digits were, every step kept; files that are not pictures we accept, too
large or broken, refused in one line before decoding; and each kind of picture a phone takes
(dim light, a thumb at the edge, a small digit far off, a whiteboard's glare, a box or an
underline) read as the digit it shows.

Run with:  python -m unittest test_pictures -v
"""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import unittest
import warnings
import zlib
from unittest import mock

import numpy as np

import pictures
from mnist_csv import DataError

from test_train_mnist import HERE, Files, needs_pillow, photo_digits  # the shared fixtures

if photo_digits is not None:
    from PIL import Image


@needs_pillow
class TestReadingImages(Files):
    """prepare and read_image: a picture becomes what MNIST would have made of it."""

    def setUp(self):
        super().setUp()
        self.digits = self.rows[:10, 1:].astype(np.float64)

    def save(self, image, name, **options):
        image.save(self.path(name), **options)
        return self.path(name)

    def test_an_enlarged_inverted_digit_comes_back_close_to_the_original(self):
        prepared = photo_digits.enlarged_and_inverted(self.digits)
        self.assertEqual((prepared.dtype, prepared.shape), (np.float32, (10, 784)))
        differences = np.abs(prepared - self.digits / 255).mean(axis=1)
        self.assertLess(np.mean(differences), 0.04)        # 0.065 for a shift by one pixel
        self.assertLess(max(differences), 0.1)

    def test_mnist_layout_longest_side_20_centre_of_mass_at_14(self):
        picture = np.zeros((300, 500))
        picture[50:250, 100:160] = 1.0                      # a tall bar off to the left
        prepared = pictures.prepare(picture).digit.reshape(28, 28)
        rows = np.flatnonzero(prepared.any(1))
        self.assertEqual(rows[-1] - rows[0] + 1, 20)
        self.assertEqual((prepared.min(), prepared.max()), (0.0, 1.0))
        ys, xs = np.indices(prepared.shape)
        centre = [(axis * prepared).sum() / prepared.sum() for axis in (ys, xs)]
        np.testing.assert_allclose(centre, [14, 14], atol=0.5)

    def test_dark_on_light_is_inverted_and_light_on_dark_is_not(self):
        light_on_dark = photo_digits.enlarged(self.digits[0])
        dark_on_light = photo_digits.enlarged(self.digits[0], inverted=True)
        one, other = (pictures.prepare(np.asarray(picture, dtype=np.float64)).digit
                      for picture in (light_on_dark, dark_on_light))
        np.testing.assert_allclose(one, other, atol=0.02)
        told = pictures.prepare(np.asarray(light_on_dark, dtype=np.float64), "light")
        self.assertTrue(told.light_page)                    # the override is obeyed
        self.assertGreater(np.abs(told.digit - one).mean(), 0.05)

    def test_every_image_mode_gives_the_same_digit(self):
        picture = photo_digits.enlarged(self.digits[1], inverted=True)
        expected = pictures.read_image(self.save(picture, "gray.png"))
        wide = (np.asarray(picture, dtype=np.uint16) * 257).astype(np.uint16)
        transparent = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        transparent.putalpha(Image.eval(picture, lambda value: 255 - value))
        variants = {"rgb.png": picture.convert("RGB"), "palette.png": picture.convert("P"),
                    "16bit.png": Image.fromarray(wide), "transparent.png": transparent,
                    "gray-alpha.png": picture.convert("LA"), "photo.jpg": picture.convert("RGB")}
        for name, image in variants.items():
            with self.subTest(name=name):
                prepared = pictures.read_image(self.save(image, name))
                self.assertLess(np.abs(prepared - expected).mean(), 0.01)

    def test_no_ink_is_refused_not_guessed(self):
        flat = Image.new("L", (100, 80), 200)
        noise = np.random.default_rng(0).normal(128, 10, (400, 300)).clip(0, 255)
        noisy = Image.fromarray(noise.astype(np.uint8))
        for name, image in (("blank.png", flat), ("noise.png", noisy),
                            ("speck.png", Image.new("L", (50, 50), 255))):
            if name == "speck.png":
                image.putpixel((20, 20), 0)                 # one dark pixel: a speck, not ink
            with self.subTest(name=name), self.assertRaisesRegex(DataError, "found no ink"):
                pictures.read_image(self.save(image, name))

    def test_a_large_photo_and_a_tiny_drawing(self):
        big = photo_digits.enlarged(self.digits[2], inverted=True).resize((2000, 2000))
        tiny = photo_digits.enlarged(self.digits[2], inverted=True).resize((14, 14))
        expected = pictures.read_image(self.save(photo_digits.enlarged(self.digits[2]), "a.png"))
        for image, name in ((big, "big.png"), (tiny, "tiny.png")):
            prepared = pictures.read_image(self.save(image, name))
            self.assertLess(np.abs(prepared - expected).mean(), 0.05, name)

    def test_files_that_are_not_images(self):
        path = self.write("fake.png", ["not an image"])
        with self.assertRaises(DataError) as caught:
            pictures.read_image(path)
        self.assertIn("not an image file", str(caught.exception))
        self.save(photo_digits.enlarged(self.digits[0]), "cut.png")
        with open(self.path("cut.png"), "rb") as file:
            data = file.read()
        with open(self.path("cut.png"), "wb") as file:
            file.write(data[: len(data) // 2])
        with self.assertRaises(DataError) as caught:
            pictures.read_image(self.path("cut.png"))
        self.assertIn("could not be read as an image", str(caught.exception))


    # Pictures that are not clean drawings: each must come out as the clean one does.

    def on_paper(self, index, size=(200, 240), at=(40, 60)):
        """MNIST test digit `index` as dark ink (0..1, 140 pixels tall) on a page of `size`."""
        ink = np.zeros(size[::-1])
        enlarged = np.asarray(photo_digits.enlarged(self.digits[index]).resize((140, 140)),
                              dtype=np.float64) / 255
        ink[at[1]:at[1] + 140, at[0]:at[0] + 140] = enlarged
        return ink

    def photo(self, ink, page=235.0, noise=3.0, seed=0):
        """Ink on a page (a number, or an array of the page's brightness), with camera noise."""
        picture = page - ink * (page - 30.0)
        picture += np.random.default_rng(seed).normal(0, noise, ink.shape)
        return Image.fromarray(np.clip(picture, 0, 255).round().astype(np.uint8))

    def assert_reads_as_clean(self, index, picture, name, closest=0.03):
        clean = pictures.read_image(self.save(self.photo(self.on_paper(index)), f"clean-{name}"))
        prepared = pictures.read_image(self.save(picture, name))
        self.assertLess(np.abs(prepared - clean).mean(), closest, name)

    def test_a_tight_crop_whose_ink_touches_the_edges(self):
        for index in range(3):
            ink = self.on_paper(index)
            rows, columns = np.flatnonzero(ink.max(1) > 0.5), np.flatnonzero(ink.max(0) > 0.5)
            tight = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
            self.assert_reads_as_clean(index, self.photo(tight), f"tight-{index}.png", 0.05)

    def test_a_shadow_across_the_page(self):
        ink = self.on_paper(3)
        for angle in (0, 2.3):                              # light falls by 30% across the page
            ys, xs = np.indices(ink.shape)
            along = np.cos(angle) * xs / ink.shape[1] + np.sin(angle) * ys / ink.shape[0]
            light = 1 - 0.3 * (along - along.min()) / (along.max() - along.min())
            picture = self.photo(ink * 0.6, page=235.0 * light)     # a grey pencil, shaded
            self.assert_reads_as_clean(3, picture, f"shadow-{angle}.png")

    def test_a_sheet_of_paper_on_a_darker_desk(self):
        sheet = np.asarray(self.photo(self.on_paper(4)), dtype=np.float64)
        desk = np.full((300, 320), 70.0)
        desk += np.random.default_rng(1).normal(0, 5, desk.shape)
        desk[30:270, 50:250] = sheet
        picture = Image.fromarray(np.clip(desk, 0, 255).astype(np.uint8))
        self.assert_reads_as_clean(4, picture, "desk.png", 0.035)

    def test_lined_and_squared_notebook_paper(self):
        for squared in (False, True):
            ink = self.on_paper(5)
            rules = np.zeros_like(ink)
            rules[7::16] = 0.35                             # faint blue-grey rules
            if squared:
                rules[:, 3::16] = 0.35
            picture = self.photo(np.maximum(ink, rules))
            self.assert_reads_as_clean(5, picture, f"ruled-{squared}.png")

    def test_a_photo_is_turned_as_its_exif_orientation_says(self):
        upright = self.photo(self.on_paper(7)).convert("RGB")
        expected = pictures.read_image(self.save(upright, "upright.png"))
        exif = Image.Exif()
        exif[0x0112] = 6                                    # "turn 90 degrees clockwise to show"
        turned = self.save(upright.rotate(90, expand=True), "turned.jpg", exif=exif, quality=95)
        self.assertLess(np.abs(pictures.read_image(turned) - expected).mean(), 0.025)

    def test_prepare_keeps_every_step_and_read_image_is_prepare_of_read_brightness(self):
        path = self.save(self.photo(self.on_paper(6)), "six.png")
        steps = pictures.prepare(pictures.read_brightness(path))
        self.assertEqual((steps.gray.shape, steps.page.shape, steps.ink.shape),
                         ((240, 200),) * 3)
        self.assertTrue(steps.light_page)
        self.assertEqual((steps.inked.dtype, steps.digit_mask.dtype), (bool, bool))
        self.assertFalse(steps.digit_mask[~steps.inked].any())
        self.assertFalse(steps.several)
        top, left, bottom, right = steps.box
        self.assertTrue(steps.digit_mask[top:bottom, left:right].any())
        np.testing.assert_array_equal(steps.digit, pictures.read_image(path))

    def crafted_png(self, name, width, height, colour_type=6):
        """A PNG file whose header claims width x height (RGBA): a few bytes, nothing decoded."""
        def chunk(kind, data):
            return (len(data).to_bytes(4, "big") + kind + data
                    + zlib.crc32(kind + data).to_bytes(4, "big"))
        header = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
                  + bytes([8, colour_type, 0, 0, 0]))
        with open(self.path(name), "wb") as file:
            file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                       + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
        return self.path(name)

    def test_pixel_bombs_are_refused_before_decoding(self):
        for width, height in ((13_000, 13_000), (1, 80_000_000), (7_100, 7_100),
                              (100_000, 100_000)):
            path = self.crafted_png(f"bomb-{width}x{height}.png", width, height)
            started = time.perf_counter()
            tracemalloc.start()
            try:
                with self.subTest(size=(width, height)), warnings.catch_warnings():
                    warnings.simplefilter("error")          # Pillow's warning must not escape
                    with self.assertRaisesRegex(DataError, "more than 50,000,000 pixels"):
                        pictures.read_image(path)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            self.assertLess(peak, 5_000_000)
            self.assertLess(time.perf_counter() - started, 5)

    def test_a_long_thin_picture_is_reduced_before_preparation(self):
        strip = np.full((2, 3_000_000), 255, dtype=np.uint8)   # 6 MB decoded, 3 KB as PNG
        strip[:, 1_000_000:1_200_000] = 0
        path = self.save(Image.fromarray(strip), "strip.png")
        tracemalloc.start()
        try:
            steps = pictures.prepare(pictures.read_brightness(path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLessEqual(max(steps.gray.shape), pictures.WORKING_SIDE)
        self.assertLess(peak, 20_000_000)


# ----------------------------------------------------------------------------------------------
# The conditions phones meet: each kind of picture read as the digit it shows
# ----------------------------------------------------------------------------------------------

_model = {}


def small_model():
    """A small network trained once for these tests (5,000 rows, 2 epochs: about 92%)."""
    if not _model:
        import train_mnist
        _model["folder"] = tempfile.TemporaryDirectory()
        path = os.path.join(_model["folder"].name, "model.npz")
        with contextlib.redirect_stdout(io.StringIO()):
            assert train_mnist.main(["--limit", "5000", "--epochs", "2", "--hidden", "64",
                                     "--val-size", "0", "--quiet", "--save", path]) == 0
        _model["net"] = train_mnist.Network.load(path)
    return _model["net"]


def tearDownModule():
    if _model:
        _model["folder"].cleanup()


@needs_pillow
class TestPhoneConditions(Files):
    """Pictures of benchmarks/real_digits.py's kinds, drawn from its stroke paths (seeded):
    each read as the digit it shows, in bounded memory."""

    def assert_read_right(self, kind, digits=(0, 4, 7), seed=0):
        import real_digits
        net, rng = small_model(), np.random.default_rng(seed)
        for digit in digits:
            with self.subTest(kind=kind, digit=digit):
                path = real_digits.save(real_digits.phone_picture(digit, kind, rng),
                                        self.path(f"{kind}-{digit}"), rng)
                tracemalloc.start()
                try:
                    steps = pictures.read_picture(path)
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                self.assertEqual(net.predict(steps.digit[None]).argmax(), digit)
                self.assertFalse(steps.several)
                self.assertLess(peak, 400_000_000)

    def test_low_light_dim_warm_noisy_darker_corners(self):
        self.assert_read_right("dim")

    def test_a_thumb_or_the_desk_edge_at_a_border(self):
        self.assert_read_right("thumb")

    def test_a_sheet_on_a_desk_the_digit_touching_its_edge(self):
        self.assert_read_right("desk", digits=(4,), seed=55)   # the 4 touches the sheet's edge

    def test_a_small_digit_far_from_the_middle_with_specks(self):
        self.assert_read_right("far")

    def test_a_whiteboard_with_a_glare_spot(self):
        self.assert_read_right("glare", digits=(0, 1, 7))

    def test_a_printed_box_or_an_underline(self):
        self.assert_read_right("boxed")

    def test_two_digits_side_by_side_are_read_and_flagged(self):
        import real_digits
        rng = np.random.default_rng(0)
        ink = sum(real_digits.ink_layer(real_digits.drawn_digit(digit, rng, 200, 140),
                                        (640, 400), 10, np.array([x, 200]))
                  for digit, x in ((4, 220), (2, 420)))
        path = self.path("42.png")
        Image.fromarray((235 - 200 * np.clip(ink, 0, 1)).astype(np.uint8)).save(path)
        steps = pictures.read_picture(path)
        self.assertTrue(steps.several)
        self.assertIn(small_model().predict(steps.digit[None]).argmax(), (4, 2))
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            _, read, digits, refused = pictures.read_to_predict([path])
        self.assertEqual((read, refused, len(digits)), ([path], [], 1))
        self.assertRegex(errors.getvalue(), r"^note: .*42\.png: seems to hold more than one "
                                            r"digit; the largest is read\n$")


@needs_pillow
class TestHostilePictures(Files):
    """Pictures opened only as the formats read here, judged by content; a folder read to the
    end, each bad picture refused in one line naming it (escaped), the good ones kept."""

    def digit_picture(self, name):
        photo_digits.enlarged(self.rows[0, 1:], inverted=True).save(self.path(name))
        return self.path(name)

    def test_postscript_named_png_never_reaches_ghostscript(self):
        path = self.path("digit.png")
        with open(path, "w") as file:
            file.write("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n")
        with mock.patch("subprocess.check_call") as call, mock.patch("subprocess.run") as run, \
                self.assertRaisesRegex(DataError, r"digit\.png: not an image file of a kind "
                                                  r"read here \(PNG, JPEG, GIF, BMP, WEBP"):
            pictures.read_image(path)
        self.assertFalse(call.called or run.called)

    def read_folder(self, folder):
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            _, read, digits, refused = pictures.read_to_predict([folder])
        return read, len(digits), refused, errors.getvalue().splitlines()

    def test_a_folder_of_hostile_pictures_is_read_to_the_end(self):
        os.mkdir(self.path("d"))
        good = self.digit_picture(os.path.join("d", "5-good.png"))
        infinite = np.full((40, 40), np.inf, dtype=np.float32)
        infinite[10:30, 18:22] = -np.inf
        Image.fromarray(infinite, "F").save(self.path(os.path.join("d", "1-inf.tif")))
        os.symlink("2-loop.png", self.path(os.path.join("d", "2-loop.png")))
        self.digit_picture(os.path.join("d", "3-x\033]0;pwned\a\033[2J.png"))
        read, count, refused, lines = self.read_folder(self.path("d"))
        strange = self.path(os.path.join("d", "3-x\033]0;pwned\a\033[2J.png"))
        self.assertEqual((read, count), ([strange, good], 2))
        self.assertEqual([os.path.basename(path) for path in refused],
                         ["1-inf.tif", "2-loop.png"])
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"^error: .*1-inf\.tif: pixels that are not finite")
        self.assertRegex(lines[1], r"^error: .*2-loop\.png: could not be read \(Too many")
        summary = pictures.refused_summary(refused + [read[0]], 4)
        self.assertNotIn("\033", summary)
        self.assertIn("3-x\\x1b]0;pwned\\x07\\x1b[2J.png", summary)

    def test_a_symlink_loop_given_by_name_is_refused_in_one_line(self):
        os.symlink("loop.png", self.path("loop.png"))
        good = self.digit_picture("good.png")
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            _, read, digits, refused = pictures.read_to_predict([self.path("loop.png"), good])
        self.assertEqual((read, refused), ([good], [self.path("loop.png")]))
        self.assertRegex(errors.getvalue(), r"^error: .*loop\.png: could not be read \(Too many "
                                            r"levels of symbolic links\)\n$")

    def test_no_memory_for_one_picture_refuses_that_one_only(self):
        first, second = self.digit_picture("a.png"), self.digit_picture("b.png")
        real = pictures.prepare

        def prepare(brightness, background="auto"):
            if not prepare.failed:
                prepare.failed = True
                raise MemoryError
            return real(brightness, background)
        prepare.failed = False
        errors = io.StringIO()
        with mock.patch("pictures.prepare", prepare), contextlib.redirect_stderr(errors):
            _, read, digits, refused = pictures.read_to_predict([first, second])
        self.assertEqual((read, refused, len(digits)), ([second], [first], 1))
        self.assertRegex(errors.getvalue(), r"^error: .*a\.png: not enough memory to prepare "
                                            r"this picture\n$")

    def test_without_scikit_image_pictures_are_refused_before_any_work_csv_is_not(self):
        picture = self.digit_picture("digit.png")
        csv_file = self.write("digits.csv", [",".join(map(str, self.rows[0, 1:]))])
        with mock.patch.dict(sys.modules, {"skimage": None}):
            with self.assertRaisesRegex(DataError, r"^--predict with images needs scikit-image, "
                                                   r"which is not installed: pip install "
                                                   r"scikit-image$"):
                pictures.read_to_predict([picture])
            self.assertEqual(pictures.read_to_predict([csv_file])[0].shape, (1, 784))


class TestBenchmarkArguments(unittest.TestCase):
    """photo_digits.py and real_digits.py refuse absurd arguments in one line, before work."""

    def run_benchmark(self, name, *arguments):
        return subprocess.run([sys.executable, os.path.join(HERE, "benchmarks", name),
                               *arguments], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def test_bad_arguments_are_one_line(self):
        with tempfile.TemporaryDirectory() as folder:
            kept = os.path.join(folder, "kept.png")
            open(kept, "w").close()
            for name, arguments, expected in (
                    ("photo_digits.py", ["--count", "-9990"], "expected a whole number >= 1"),
                    ("photo_digits.py", ["--keep", folder], "holds files already"),
                    ("photo_digits.py", ["--load", kept], "kept.png"),
                    ("real_digits.py", ["--load", kept, "--count", "0"], ">= 5"),
                    ("real_digits.py", ["--load", kept, "--keep", folder], "files already")):
                with self.subTest(name=name, arguments=arguments):
                    result = self.run_benchmark(name, *arguments)
                    self.assertIn(result.returncode, (1, 2))
                    self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
                    self.assertIn(expected, result.stderr)
            self.assertEqual(os.listdir(folder), ["kept.png"])

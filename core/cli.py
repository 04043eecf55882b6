"""Command line: ai-remove-background INPUT... [-o OUT] — files or folders of photos."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from . import __version__, composite
from .catalogue import default_model_name, get_model, installed_model_names, model_names, verified_model_path
from .errors import UserError
from .imageio import DEFAULT_MAX_MEGAPIXELS, load_image
from .pipeline import MAX_THREADS, Options, remove_background

log = logging.getLogger("ai_remove_background")

PROGRAM = "ai-remove-background"
DEFAULT_SUFFIX = "-nobg"
MASK_SUFFIX = "-mask"
# Output formats by file suffix, and whether each can store alpha.
OUTPUT_FORMATS = {".png": ("PNG", True), ".webp": ("WEBP", True), ".tif": ("TIFF", True),
                  ".tiff": ("TIFF", True), ".jpg": ("JPEG", False), ".jpeg": ("JPEG", False)}
JPEG_QUALITY = 95
# zlib level 1: on a 12-megapixel cutout, 0.7 s instead of 3.1 s at Pillow's default level 6,
# for a file about 20 % larger.
PNG_COMPRESS_LEVEL = 1
SAVE_OPTIONS = {"JPEG": {"quality": JPEG_QUALITY}, "PNG": {"compress_level": PNG_COMPRESS_LEVEL}}


@dataclass
class Job:
    source: Path
    target: Path


def finite_float(text: str) -> float:
    """Parse a number for argparse, rejecting nan and inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected more than 0")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Remove the background of photos with an offline AI model. Writes PNG files with "
        "transparency next to each input, or into -o.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="image files or folders of images")
    # A string, not a Path, so that a trailing slash ("-o out/") still marks a folder.
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="output file (one input) or folder (several inputs, a folder, or OUT ending "
                        "with a slash): DIR/<stem>.png")
    parser.add_argument("--mask", action="store_true", help="write the 8-bit grayscale mask only")
    parser.add_argument("--background", metavar="SPEC",
                        help="put the subject on a colour ('white', '#20a0ff'), an image file, or 'blur' "
                        "(the original background blurred)")
    parser.add_argument("--model", choices=model_names(), default=None,
                        help="segmentation model (default: %s)" % default_model_name())
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="plain bilinear upsampling of the model's mask instead of edge-aware refinement")
    parser.add_argument("--threshold", type=int, metavar="LEVEL", help="make the mask binary at LEVEL (0-255)")
    parser.add_argument("--grow", type=finite_float, default=0.0, metavar="PX",
                        help="grow the mask by PX pixels; negative values shrink it")
    parser.add_argument("--feather", type=finite_float, default=0.0, metavar="PX", help="feather radius in pixels")
    parser.add_argument("--invert", action="store_true", help="keep the background and remove the subject")
    parser.add_argument("--hint-mask", type=Path, metavar="FILE",
                        help="a grayscale mask of the same size: its black and white pixels are kept, "
                        "the grey ones are solved again (one input only)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--threads", type=int, metavar="N",
                        help=f"inference threads, 0 to {MAX_THREADS} (default: automatic)")
    parser.add_argument("--max-megapixels", type=positive_float, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                        help="reject larger images (default: %(default)g)")
    parser.add_argument("--list-models", action="store_true", help="list the models and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more: -v shows the execution provider and timings, -vv debug detail")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def image_suffixes() -> set[str]:
    return {suffix.lower() for suffix, name in Image.registered_extensions().items() if name in Image.OPEN}


def collect_inputs(inputs: list[Path]) -> tuple[list[Path], bool]:
    """Return the image files to process, and whether a folder was among the inputs."""
    files: list[Path] = []
    has_folder = False
    suffixes = image_suffixes()
    for item in inputs:
        if item.is_dir():
            has_folder = True
            try:
                found = sorted(path for path in item.iterdir()
                               if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."))
            except OSError as error:
                raise UserError(
                    f"cannot list the folder {item} ({error.strerror or error}): check its permissions"
                ) from None
            if not found:
                log.warning("%s: no image files in this folder", item)
            files.extend(found)
        else:
            files.append(item)
    return files, has_folder


def plan_jobs(files: list[Path], output: Path | None, folder_output: bool, mask_only: bool) -> list[Job]:
    jobs = []
    for source in files:
        if output is None:
            suffix = MASK_SUFFIX if mask_only else DEFAULT_SUFFIX
            target = source.with_name(source.stem + suffix + ".png")
        elif folder_output:
            target = output / (source.stem + ".png")
        else:
            target = output
        jobs.append(Job(source, target))
    return jobs


def check_targets(jobs: list[Job], overwrite: bool) -> dict[Path, str]:
    """Return an error message per source whose target is unsafe to write."""
    problems: dict[Path, str] = {}
    claimed: dict[Path, Path] = {}
    sources = {job.source.resolve() for job in jobs if job.source.exists()}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            problems[job.source] = f"output {job.target} is an input file: inputs are never overwritten; choose -o"
        elif target in claimed:
            problems[job.source] = (f"output {job.target} is also the output of {claimed[target]}: "
                                    "rename one input or use separate output folders")
        elif job.target.exists() and not overwrite:
            problems[job.source] = f"output {job.target} already exists: pass --overwrite to replace it"
        elif job.target.suffix.lower() not in OUTPUT_FORMATS:
            problems[job.source] = (f"output {job.target} has an unsupported suffix: use one of "
                                    f"{', '.join(sorted(OUTPUT_FORMATS))}")
        claimed.setdefault(target, job.source)
    return problems


def save_atomically(image: Image.Image, target: Path) -> None:
    """Write to a temporary file beside `target`, then rename, so no half-written file remains."""
    image_format, _ = OUTPUT_FORMATS[target.suffix.lower()]
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=target.suffix, dir=target.parent)
    os.close(handle)
    try:
        options = SAVE_OPTIONS.get(image_format, {})
        image.save(temporary, format=image_format, **options)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_hint(path: Path, width: int, height: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            hint = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    except (OSError, ValueError) as error:
        raise UserError(f"hint mask {path} could not be read ({error}): give a grayscale PNG") from None
    if hint.shape != (height, width):
        raise UserError(f"hint mask {path} is {hint.shape[1]} x {hint.shape[0]}, the photo is {width} x {height}: "
                        "give a mask of the same size")
    return hint


def process(job: Job, arguments: argparse.Namespace, options: Options) -> None:
    photo = load_image(job.source, arguments.max_megapixels)
    for notice in photo.notices:
        log.warning("%s: %s", job.source, notice)
    hint = None
    if arguments.hint_mask is not None:
        hint = load_hint(arguments.hint_mask, photo.width, photo.height)
    result = remove_background(photo.rgb, photo.alpha, options, hint=hint)
    log.info("%s: %d x %d, model %s on %s, %.2f s", job.source, photo.width, photo.height,
             result.model, result.provider, result.seconds)

    _, keeps_alpha = OUTPUT_FORMATS[job.target.suffix.lower()]
    if arguments.mask:
        output = Image.fromarray(result.mask, mode="L")
    elif arguments.background:
        background = composite.make_background(arguments.background, photo.rgb, result.mask)
        foreground = composite.estimate_foreground(photo.rgb, result.mask)
        output = Image.fromarray(composite.over_background(foreground, result.mask, background), mode="RGB")
    elif keeps_alpha:
        foreground = composite.estimate_foreground(photo.rgb, result.mask)
        output = Image.fromarray(composite.cutout(foreground, result.mask), mode="RGBA")
    else:
        raise UserError(f"{job.target.suffix} cannot store transparency: write .png, or pass --background or --mask")
    save_atomically(output, job.target)


def configure_logging(verbosity: int) -> None:
    if verbosity == 0:
        level = logging.WARNING
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.DEBUG
    logging.basicConfig(level=level, format=f"{PROGRAM}: %(message)s")
    warnings.showwarning = log_warning


def log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                file: TextIO | None = None, line: str | None = None) -> None:
    """Log a Python warning as one line, shown with -v, instead of Python's two-line form on stderr."""
    log.info("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def validate_arguments(arguments: argparse.Namespace, options: Options, job_count: int) -> None:
    options.validate()
    if arguments.mask and arguments.background:
        raise UserError("--mask and --background exclude each other: choose one")
    if arguments.hint_mask is not None and job_count != 1:
        raise UserError(f"--hint-mask needs exactly one input image, got {job_count}")
    if arguments.threads is not None and not 0 <= arguments.threads <= MAX_THREADS:
        raise UserError(f"invalid --threads {arguments.threads}: expected 0 (automatic) to {MAX_THREADS}")
    # Check the model file's size and sha256 before any image is read, so that a damaged download
    # fails once, with its file name, instead of once per image.
    verified_model_path(get_model(options.model))


def list_models() -> None:
    installed = set(installed_model_names())
    default = default_model_name()
    for name in model_names():
        spec = get_model(name)
        state = "installed" if name in installed else "not installed"
        marker = " (default)" if name == default else ""
        print(f"{name}{marker}: {spec.title}; {spec.size / 1e6:.0f} MB, {state}; licence: {spec.licence}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging(arguments.verbose)
    if arguments.list_models:
        list_models()
        return 0
    if not arguments.inputs:
        print(f"{PROGRAM}: no input given: pass image files or folders (see --help)", file=sys.stderr)
        return 2

    options = Options(model=arguments.model, refine=arguments.refine, threshold=arguments.threshold,
                      grow=arguments.grow, feather=arguments.feather, invert=arguments.invert,
                      threads=arguments.threads)
    try:
        files, has_folder = collect_inputs(arguments.inputs)
        validate_arguments(arguments, options, len(files))
    except UserError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2

    output = None if arguments.output is None else Path(arguments.output)
    folder_output = output is not None and (
        has_folder or len(files) > 1 or output.is_dir() or arguments.output.endswith(("/", os.sep)))
    jobs = plan_jobs(files, output, folder_output, arguments.mask)
    problems = check_targets(jobs, arguments.overwrite)
    failures = 0
    show_bar = len(jobs) > 1
    with tqdm(total=len(jobs), unit="image", disable=None if show_bar else True, file=sys.stderr) as bar:
        for job in jobs:
            message = problems.get(job.source)
            if message is None:
                try:
                    process(job, arguments, options)
                except UserError as error:
                    message = str(error)
                except MemoryError:
                    message = "not enough memory for this image: scale it down or close other programs"
                except OSError as error:
                    message = f"could not write {job.target} ({error.strerror or error}): check the folder"
                except Exception as error:  # a bug: one line for the user, the traceback in the -vv log
                    log.debug("unexpected failure on %s", job.source, exc_info=True)
                    message = f"internal error ({type(error).__name__}: {error}): please report it with the -vv output"
            if message is not None:
                failures += 1
                tqdm.write(f"{PROGRAM}: {job.source}: {message}", file=sys.stderr)
            bar.update(1)

    if failures:
        print(f"{PROGRAM}: {failures} of {len(jobs)} images failed", file=sys.stderr)
        return 1
    if not jobs:
        print(f"{PROGRAM}: no image files found in {', '.join(map(str, arguments.inputs))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

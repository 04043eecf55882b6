"""Command line of the benchmarks: `python -m benchmarks quality|speed ...` from the checkout."""

from __future__ import annotations

import argparse
import shlex
import sys


# Options whose values are local paths: the results page shows a placeholder instead.
PATH_PLACEHOLDERS = {"--data": "DIR", "--json": "FILE", "--cache-dir": "DIR", "--rembg-python": "PYTHON"}


def displayed_command(arguments: list[str]) -> str:
    """Return the command line as the results page shows it, local paths replaced by placeholders."""
    shown = []
    replace_next = None
    for argument in arguments:
        if replace_next is not None:
            shown.append(replace_next)
            replace_next = None
            continue
        option, equals, _ = argument.partition("=")
        if option in PATH_PLACEHOLDERS and equals:
            shown.append(f"{option}={PATH_PLACEHOLDERS[option]}")
            continue
        if argument in PATH_PLACEHOLDERS:
            replace_next = PATH_PLACEHOLDERS[argument]
        shown.append(argument)
    return "python -m benchmarks " + shlex.join(shown)


def main(argv: list[str] | None = None) -> int:
    arguments_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Benchmarks of the background remover (results: BENCHMARKS.md).")
    commands = parser.add_subparsers(dest="command", required=True)

    from . import quality, speed

    quality.add_arguments(commands.add_parser(
        "quality", help="cutout quality of each configuration against ground truth",
        description="Score each configuration against an evaluation folder's ground truth."))
    speed.add_arguments(commands.add_parser(
        "speed", help="speed and memory of the CLI, the worker and rembg against the inference floor",
        description="Time model inference, the CLI, the worker and rembg's CLI on generated photos."))
    arguments = parser.parse_args(arguments_list)
    command = displayed_command(arguments_list)
    if arguments.command == "quality":
        return quality.run(arguments, command)
    return speed.run(arguments, command)


if __name__ == "__main__":
    sys.exit(main())

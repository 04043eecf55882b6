"""Command line of the benchmarks: `python -m benchmarks quality ...` from the checkout."""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    arguments_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Benchmarks of the background remover (results: BENCHMARKS.md).")
    commands = parser.add_subparsers(dest="command", required=True)

    from . import quality

    quality.add_arguments(commands.add_parser(
        "quality", help="cutout quality of each configuration against ground truth",
        description="Score each configuration against an evaluation folder's ground truth."))
    arguments = parser.parse_args(arguments_list)
    command = "python -m benchmarks " + shlex.join(arguments_list)
    return quality.run(arguments, command)


if __name__ == "__main__":
    sys.exit(main())

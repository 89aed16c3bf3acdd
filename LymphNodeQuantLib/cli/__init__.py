"""The ``lnq`` command line.

Each sub-command lives in its own module of this package and provides
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func``); heavy imports
(torch, SimpleITK) happen inside the command's function so ``lnq --help`` stays fast.
A user-caused :class:`~LymphNodeQuantLib.errors.LNQError` prints one clear line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from ..errors import LNQError

#: sub-command name -> module in this package (kept in the order ``lnq --help`` lists them)
COMMANDS = {
    "demo": "demo",
    "segment": "segment",
    "models": "models",
    "measure": "measure",
    "evaluate": "evaluate",
    "train": "train",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lnq",
        description="LymphNodeQuant: find, outline and measure mediastinal lymph nodes on chest CT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"{__name__}.{module_name}").add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LNQError as error:
        print(f"lnq {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lnq {args.command}: interrupted; no output was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

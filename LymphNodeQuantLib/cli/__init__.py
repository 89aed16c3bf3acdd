"""The ``lnq`` command line.

Each sub-command lives in its own module of this package and provides
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func``); heavy imports
(torch, SimpleITK) happen inside the command's function so ``lnq --help`` stays fast.
A user-caused :class:`~LymphNodeQuantLib.errors.LNQError` prints one clear line and exits 2; an
operating-system error (disk full) one line and exit 1; Ctrl-C says truthfully what was written.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from ..errors import LNQError

#: sub-command name -> module in this package (kept in the order ``lnq --help`` lists them)
COMMANDS = {
    "demo": "demo",
    "segment": "segment",
    "models": "models",
    "measure": "measure",
    "followup": "followup",
    "evaluate": "evaluate",
    "train": "train",
    "export": "export",
    "batch": "batch",
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


class _CommandLogHandler(logging.Handler):
    """The engine's log records for the user: information as plain lines (on stdout, or on stderr when
    stdout carries JSON), warnings and errors as ``lnq COMMAND: warning: ...`` on stderr. Records a job
    collected for its own result (``log.collected_messages``) are printed by the command, not here."""

    def __init__(self, command: str, information_stream) -> None:
        super().__init__(logging.INFO)
        self.command = command
        self.information_stream = information_stream

    def emit(self, record: logging.LogRecord) -> None:
        from ..log import is_collected

        if is_collected(record):
            return
        if record.levelno >= logging.WARNING:
            print(f"lnq {self.command}: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        else:
            print(record.getMessage(), file=self.information_stream, flush=True)


def _interrupted_message(command: str) -> str:
    from ..output_files import written_this_process

    written = written_this_process()
    if not written:
        return f"lnq {command}: interrupted; no output was written."
    return f"lnq {command}: interrupted after these outputs were completely written: {', '.join(map(str, written))}."


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..output_files import forget_written

    parser = build_parser()
    args = parser.parse_args(argv)
    forget_written()
    engine_log = logging.getLogger(__name__.split(".")[0])
    json_on_stdout = getattr(args, "progress", None) == "json"
    handler = _CommandLogHandler(args.command, sys.stderr if json_on_stdout else sys.stdout)
    root, previous_level = logging.getLogger(), engine_log.level
    root.addHandler(handler)  # after the engine's own handlers (collectors) have seen each record
    engine_log.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except LNQError as error:
        print(f"lnq {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment (disk full, permissions changed mid-run): one line, no traceback
        where = f" ('{error.filename}')" if error.filename else ""
        print(f"lnq {args.command}: error: {error.strerror or error}{where}; nothing was overwritten.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted_message(args.command), file=sys.stderr)
        return 130
    finally:
        root.removeHandler(handler)
        engine_log.setLevel(previous_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

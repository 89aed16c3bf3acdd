"""Write one benchmark's section of ``benchmarks/RESULTS.md`` without touching the others.

Each benchmark script owns a section delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->``
and calls :func:`update_section` with its Markdown (which should state machine, date and the
command that produced it; :func:`machine_description` helps).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery number here is written by a script in `benchmarks/`; rerun the command quoted in a section to reproduce it.\n"


def machine_description() -> str:
    import numpy

    try:
        import torch

        torch_text = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            torch_text += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        torch_text = "torch not installed"
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, {torch_text}; "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def command_line() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix().split("/benchmarks/")[-1] if "/benchmarks/" in sys.argv[0] else sys.argv[0]] + sys.argv[1:])


def update_section(name: str, markdown: str, path: Path = RESULTS_PATH) -> Path:
    """Replace (or append) the section ``name`` of RESULTS.md with ``markdown``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path

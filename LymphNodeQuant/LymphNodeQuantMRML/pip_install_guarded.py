"""Install Python packages with pip without ever replacing a protected package (a standalone script).

Run by the module in a background process (``PythonSlicer pip_install_guarded.py ...``) and
followed through the JSON-lines protocol of :mod:`LymphNodeQuantMRML.runner`::

    PythonSlicer pip_install_guarded.py --constraints C.txt --protect numpy --protect vtk -- monai==1.6.1 ...

1. ``pip install --dry-run --report`` resolves the requirements under the constraints file.
2. If the resolution would install any ``--protect``-ed distribution (3D Slicer's numpy, scipy,
   SimpleITK and vtk, the PyTorch extension's torch and torchvision), nothing is installed and an
   ``error`` event names the package: pip never replaces them, whatever a dependency asks for.
3. Otherwise exactly the resolved distributions are installed (``--no-deps``, the versions pip
   chose in step 1), and ``Collecting`` lines become ``progress`` events.

``--dry-run-only`` stops after step 2 and reports what would be installed. ``--pip-option`` passes
an option to both pip runs (tests use ``--target``/``--python-version``). Standard library only:
this runs in Slicer's Python before any engine package exists.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def canonical_name(name):
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def emit(event, **data):
    data["event"] = event
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def log(line):
    sys.stderr.write(line.rstrip("\r\n") + "\n")
    sys.stderr.flush()


def resolved_distributions(report):
    """(name, version) of every distribution a pip ``--report`` would install."""
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in report.get("install", [])]


def protected_conflicts(distributions, protected):
    """The resolved (name, version) pairs that are protected distributions."""
    wanted = {canonical_name(name) for name in protected}
    return [(name, version) for name, version in distributions if canonical_name(name) in wanted]


def pip_error_summary(output, limit=12):
    """The lines of pip's output that say why it failed (its ERROR lines, else the tail)."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lstrip().startswith("ERROR") or "conflict" in line.lower()]
    return "\n".join((errors or lines)[-limit:])


def progress_for_line(line, collected, total):
    """(fraction, stage, collected) for one line of ``pip install`` output, or None."""
    text = line.strip()
    match = re.match(r"^(Collecting|Processing|Downloading|Using cached)\s+(\S+)", text)
    if match and match.group(1) in ("Collecting", "Processing"):
        collected += 1
        target = match.group(2)
        if re.search(r"[/\\]|\.whl$", target):  # a local or downloaded file: its name comes first
            name = re.split(r"[/\\]", target)[-1].split("-")[0]
        else:
            name = re.split(r"[=<>!~ ;\[]", target)[0]
        return 0.1 + 0.75 * min(collected, total) / max(total, 1), f"downloading {name}", collected
    if text.startswith("Installing collected packages"):
        return 0.9, "installing", collected
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraints", required=True, help="pip constraints file")
    parser.add_argument("--protect", action="append", default=[], help="distribution that must never be installed or replaced")
    parser.add_argument("--pip-option", action="append", default=[], help="option passed to both pip runs")
    parser.add_argument("--dry-run-only", action="store_true", help="resolve and check only")
    parser.add_argument("requirements", nargs="+")
    args = parser.parse_args(argv)
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "-c",
        args.constraints,
        *args.pip_option,
    ]

    emit("progress", fraction=0.02, stage="resolving")
    handle, report_path = tempfile.mkstemp(prefix="LymphNodeQuant-pip-report-", suffix=".json")
    os.close(handle)
    try:
        resolution = subprocess.run(
            [*pip, "--dry-run", "--quiet", "--report", report_path, *args.requirements],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )  # fmt: skip
        for line in resolution.stdout.splitlines():
            log(line)
        if resolution.returncode != 0:
            emit(
                "error",
                message="pip could not resolve " + " ".join(args.requirements) + ":\n" + pip_error_summary(resolution.stdout),
            )
            return 2
        with open(report_path, encoding="utf-8") as stream:
            distributions = resolved_distributions(json.load(stream))
    finally:
        os.unlink(report_path)

    conflicts = protected_conflicts(distributions, args.protect)
    if conflicts:
        listed = ", ".join(f"{name} {version}" for name, version in conflicts)
        emit(
            "error",
            message=(
                f"Installing {' '.join(args.requirements)} would install {listed}, which 3D Slicer or the PyTorch "
                "extension provides and which must not be replaced; nothing was installed."
            ),
            conflicts=[list(pair) for pair in conflicts],
        )
        return 3
    pinned = [f"{name}=={version}" for name, version in distributions]
    if args.dry_run_only or not pinned:
        emit("done", outputs={"installed": [], "would_install": pinned})
        return 0

    emit("progress", fraction=0.1, stage=f"downloading {len(pinned)} package(s)")
    process = subprocess.Popen(
        [*pip, "--no-deps", "--progress-bar", "off", *pinned],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
    )  # fmt: skip
    collected = 0
    output = []
    for line in iter(process.stdout.readline, ""):
        log(line)
        output.append(line)
        step = progress_for_line(line, collected, len(pinned))
        if step is not None:
            fraction, stage, collected = step
            emit("progress", fraction=fraction, stage=stage)
    process.stdout.close()
    if process.wait() != 0:
        emit("error", message="pip could not install " + " ".join(pinned) + ":\n" + pip_error_summary("".join(output)))
        return 4
    emit("progress", fraction=1.0, stage="installed")
    emit("done", outputs={"installed": pinned, "would_install": pinned})
    return 0


if __name__ == "__main__":
    sys.exit(main())

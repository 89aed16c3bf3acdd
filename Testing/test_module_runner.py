"""The background engine process runner, with real subprocesses."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest
from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantMRML.runner import EngineProcess, EngineProcessError, engine_environment, parse_event_line  # noqa: E402

from LymphNodeQuantLib.errors import CancelledError  # noqa: E402
from LymphNodeQuantLib.progress import CancelToken  # noqa: E402


def _python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


def _process_is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (an unreaped zombie counts as gone: it holds no resources)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" in status.read()
    except FileNotFoundError:
        return True


def test_parse_event_line_accepts_only_json_event_objects():
    event = parse_event_line('{"event": "progress", "fraction": 0.25, "stage": "inference"}\n')
    assert event.kind == "progress" and event.fraction == 0.25 and event.stage == "inference"
    assert parse_event_line("Loading model...") is None
    assert parse_event_line('{"fraction": 0.3}') is None  # no event name
    assert parse_event_line("{not json") is None
    assert parse_event_line("[1, 2]") is None


def test_wait_forwards_progress_and_returns_outputs():
    script = """
        import json, sys
        for i, stage in enumerate(["load", "inference", "postprocess"]):
            print(json.dumps({"event": "progress", "fraction": (i + 1) / 4, "stage": stage}), flush=True)
            print("a log line on stderr", file=sys.stderr, flush=True)
        print("plain text is kept as log")
        print(json.dumps({"event": "done", "outputs": {"segmentation": "out.nrrd", "device": "cpu"}}), flush=True)
    """
    seen = []
    process = EngineProcess(_python(script))
    outputs = process.wait(progress=lambda fraction, stage: seen.append((fraction, stage)))
    assert outputs == {"segmentation": "out.nrrd", "device": "cpu"}
    assert seen == [(0.25, "load"), (0.5, "inference"), (0.75, "postprocess")]
    assert "plain text is kept as log" in process.log
    assert process.returncode == 0


def test_error_event_is_raised_with_the_engine_message():
    script = """
        import json, sys
        print(json.dumps({"event": "error", "message": "Input is not a CT: values 0..1"}), flush=True)
        sys.exit(2)
    """
    with pytest.raises(EngineProcessError, match="Input is not a CT"):
        EngineProcess(_python(script)).wait()


def test_crash_without_result_reports_exit_code_and_output_tail():
    script = """
        import sys
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    """
    with pytest.raises(EngineProcessError, match=r"exit code 3(.|\n)*something broke"):
        EngineProcess(_python(script)).wait()


def test_poll_never_blocks_while_the_child_is_silent():
    process = EngineProcess(_python("import time; time.sleep(30)")).start()
    try:
        started = time.monotonic()
        for _ in range(20):
            assert process.poll() == []
        # 20 polls of a silent child return at once (generous bound, not a benchmark).
        assert time.monotonic() - started < 5.0
        assert process.running and not process.finished
    finally:
        process.cancel()


def test_cancel_kills_the_whole_process_tree():
    script = """
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(json.dumps({"event": "progress", "fraction": 0.1, "stage": "inference"}), flush=True)
        print(json.dumps({"event": "child", "pid": child.pid}), flush=True)
        time.sleep(120)
    """
    process = EngineProcess(_python(script)).start()
    child_pid = None
    deadline = time.monotonic() + 60
    while child_pid is None and time.monotonic() < deadline:
        for event in process.poll():
            if event.kind == "child":
                child_pid = event.data["pid"]
        time.sleep(0.02)
    assert child_pid is not None, list(process.log)
    assert process.fraction == pytest.approx(0.1) and process.stage == "inference"
    process.cancel()
    assert process.returncode is not None
    deadline = time.monotonic() + 10
    while not _process_is_gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_is_gone(child_pid), "the grandchild survived the cancel"
    with pytest.raises(CancelledError):
        process.outcome()


def test_wait_honours_a_cancel_token():
    script = """
        import json, time
        for i in range(1000):
            print(json.dumps({"event": "progress", "fraction": i / 1000, "stage": "inference"}), flush=True)
            time.sleep(0.05)
    """
    token = CancelToken()

    def progress(fraction, stage):
        if fraction >= 0.002:
            token.cancel()

    process = EngineProcess(_python(script))
    with pytest.raises(CancelledError):
        process.wait(progress=progress, cancel=token)
    assert process.returncode is not None and process.returncode != 0


def test_engine_environment_makes_the_engine_importable_in_the_child(tmp_path):
    env = engine_environment()
    env["PYTHONPATH"] = env["PYTHONPATH"]  # as built, nothing else
    script = (
        "import json, LymphNodeQuantLib; print(json.dumps({'event': 'done', 'outputs': {'file': LymphNodeQuantLib.__file__}}))"
    )
    outputs = EngineProcess([sys.executable, "-S", "-c", script], env=env, cwd=str(tmp_path)).wait()
    import LymphNodeQuantLib

    assert os.path.samefile(outputs["file"], LymphNodeQuantLib.__file__)

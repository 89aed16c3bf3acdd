"""The code base keeps one style: ruff's lint rules and formatter (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


def _ruff(repo_root, *arguments: str) -> subprocess.CompletedProcess:
    executable = shutil.which("ruff")
    command = [executable] if executable else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *arguments], cwd=repo_root, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ruff_available(repo_root):
    if _ruff(repo_root, "--version").returncode != 0:
        pytest.fail("ruff is missing: pip install -e '.[test]' installs it")


def test_lint_rules_pass(repo_root, ruff_available):
    result = _ruff(repo_root, "check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_code_is_formatted(repo_root, ruff_available):
    result = _ruff(repo_root, "format", "--check", ".")
    assert result.returncode == 0, "run 'ruff format .':\n" + result.stdout[-4000:] + result.stderr[-2000:]

"""The systemd units shipped in deploy/systemd: valid for systemd, and running commands the CLI accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from greengate.cli import app
from greengate.security.encryption import Keyring
from greengate.settings import Settings

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/greengate/venv/bin/greengate"


def unit_files() -> list[Path]:
    files = sorted(UNITS.glob("*.service"))
    assert [f.name for f in files] == ["greengate-worker.service", "greengate.service"]
    return files


def exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def parse(argv: list[str]) -> Any:
    """Parse a command line the way `greengate` would, without running it."""
    command = typer.main.get_command(app)
    ctx = command.make_context("greengate", list(argv))
    sub = command.get_command(ctx, argv[0])  # type: ignore[attr-defined]
    if sub is None:
        raise LookupError(f"no such command: {argv[0]}")
    return sub.make_context(argv[0], list(argv[1:]), parent=ctx)


def test_units_run_the_installed_cli_with_arguments_it_accepts() -> None:
    for unit in unit_files():
        argv = exec_start(unit)
        assert argv[0] == INSTALLED
        parsed = parse(argv[1:])
        if argv[1] == "serve":
            assert parsed.params["no_worker"] is True  # the worker has its own unit
            assert parsed.params["host"] == "127.0.0.1"  # behind the reverse proxy
    with pytest.raises(Exception, match="No such option"):
        parse(["serve", "--no-such-option"])


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    greengate = Path(sys.executable).with_name("greengate")
    assert greengate.exists()
    copies = []
    for unit in unit_files():
        copy = tmp_path / unit.name
        # Verify checks that ExecStart's program exists: point it at this environment's CLI.
        copy.write_text(unit.read_text().replace(INSTALLED, str(greengate)))
        copies.append(str(copy))

    result = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, timeout=120
    )

    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(Path(c).name in line for c in copies)
    ]
    assert result.returncode == 0, result.stderr
    assert complaints == []


DEPLOY_DOC = UNITS.parents[1] / "docs" / "deploy.md"


def test_deployment_guide_names_only_settings_and_files_that_exist() -> None:
    text = DEPLOY_DOC.read_text()
    fields = {f"GREENGATE_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"GREENGATE_[A-Z_]+[A-Z]", text))
    assert named and named <= fields, named - fields
    for path in re.findall(r"`(deploy/systemd/[\w.-]+)`", text):
        assert (UNITS.parents[1] / path).exists(), path


def test_deployment_guides_key_command_makes_a_key_the_gateway_accepts() -> None:
    [snippet] = re.findall(r'python -c "([^"]+)"', DEPLOY_DOC.read_text())
    spec = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert spec.startswith("k1:")
    Keyring.parse(spec)  # raises on a malformed or short key

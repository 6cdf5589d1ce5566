"""The README's two 5-minute tours, run as written: its shell commands, one after the other, in a fresh
directory next to `greengate serve --demo`, with the values the README asks the reader to copy filled in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from defusedxml.ElementTree import fromstring

from tests.support.processes import GreengateProcess

README = Path(__file__).resolve().parents[2] / "README.md"
EXCHANGE_TOUR = ("## A 5-minute tour of the Exchange API", "### Exchange callbacks")
MERCHANT_TOUR = ("### A 5-minute tour", "## Operator console")
DONE = "__tour_command_done__"


def shell_commands(start: str, end: str) -> list[str]:
    """The commands of the README's ```sh blocks between two headings, continuation lines joined."""
    text = README.read_text()
    section = text[text.index(start) : text.index(end, text.index(start))]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                commands.append(command.strip())
    return commands


class Shell:
    """One bash process the commands are typed into, so that variables carry from one to the next."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, command: str) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\nprintf '\\n{DONE} %s\\n' $?\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        for line in self.proc.stdout:
            if line.startswith(DONE):
                return int(line.split()[1]), "".join(lines).strip()
            lines.append(line)
        raise AssertionError(f"the shell ended during {command!r}: {''.join(lines)}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def demo(tmp_path: Path, free_port: int) -> Iterator[tuple[GreengateProcess, dict[str, Any], Path]]:
    """`greengate serve --demo` in an empty directory with no GREENGATE_* setting: the README's defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENGATE_")}
    env["GREENGATE_LOG_LEVEL"] = "WARNING"
    server = GreengateProcess(["serve", "--demo", "--port", str(free_port)], env, tmp_path, "serve")
    try:
        server.wait_http(f"http://127.0.0.1:{free_port}/healthz", timeout=60)
        printed = server.output()
        start = printed.index("{", printed.index("Demo data made"))
        data, _ = json.JSONDecoder().raw_decode(printed[start:])
        yield server, data, tmp_path
    finally:
        server.terminate()
        server.reap()


def as_run_here(command: str, port: int, known: dict[str, str]) -> str:
    """The README's command for this machine: its port, this interpreter's greengate, and the values the
    reader copies from earlier output in place of the README's `...` placeholders."""
    command = command.replace("localhost:8000", f"localhost:{port}")
    command = command.replace(".venv/bin/greengate", f"{sys.executable} -m greengate.cli")
    if command.startswith("export ") and "..." in command:
        names = re.findall(r"\b([A-Z]+)=", command.split("#")[0])
        command = "export " + " ".join(f"{name}={known[name]}" for name in names)
    return command


def run_tour(shell: Shell, commands: list[str], port: int, known: dict[str, str]) -> list[tuple[str, str]]:
    outputs: list[tuple[str, str]] = []
    for command in commands:
        status, output = shell.run(as_run_here(command, port, known))
        assert status == 0, f"{command!r} exited with {status}: {output}"
        outputs.append((command, output))
        if "--json" in command:
            printed = json.loads(output)
            known.update({name: str(printed[key]) for key, name in COPIED.items() if key in printed})
    return outputs


COPIED = {"merchant_id": "M", "secret_key": "K"}  # what the README has the reader copy, and as what


def tour_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENGATE_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def test_exchange_tour_runs_as_written(demo: tuple[GreengateProcess, dict[str, Any], Path]) -> None:
    server, data, workdir = demo
    port = int(server.args[server.args.index("--port") + 1])
    shell = Shell(workdir, tour_env())
    try:
        outputs = run_tour(shell, shell_commands(*EXCHANGE_TOUR), port, {"S": data["merchant"]["api_secret"]})
    finally:
        shell.close()

    answers = [json.loads(out) for command, out in outputs if command.startswith("curl")]
    directions, created, checked, completed, second, canceled = answers
    assert {d["payment_method"] for d in directions} >= {"card"}
    order = created["items"][0]
    assert (order["order_id"], order["order_status"]) == ("1", "awaiting")
    assert checked["data"]["orders"][0]["order_status"] == "awaiting"
    assert [out for command, out in outputs if command.startswith(".venv")] == [
        "order 1: payed",
        "order 1: completed",
    ]
    (done,) = completed["data"]["orders"]
    assert (done["order_status"], done["wallet_payment"]) == ("completed", "")
    assert done["txid"] == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    assert second["items"][0]["order_id"] == "2"
    assert canceled == {
        "result": "true",
        "data": {"cancel": [{"order_id": "2", "order_status": "canceled"}], "failed": []},
    }


def xml_fields(text: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in fromstring(text)}


def test_merchant_tour_runs_as_written(demo: tuple[GreengateProcess, dict[str, Any], Path]) -> None:
    server, _, workdir = demo
    port = int(server.args[server.args.index("--port") + 1])
    commands = shell_commands(*MERCHANT_TOUR)
    # The status read (a new salt, signature and call) comes after the payer has paid.
    paying_starts = max(i for i, c in enumerate(commands) if c.startswith("SALT="))
    shell = Shell(workdir, tour_env())
    try:
        known: dict[str, str] = {}
        first = run_tour(shell, commands[:paying_starts], port, known)
        init = xml_fields(first[-1][1])
        assert init["pg_status"] == "ok", first[-1][1]
        # The reader pays on the page with the README's test card.
        page = urlsplit(init["pg_redirect_url"]).path
        paid = httpx.post(
            f"http://127.0.0.1:{port}{page}/card",
            data={"number": "4405 6450 0000 6150", "exp": "12/30", "holder": "TEST USER", "cvc": "123"},
        )
        assert paid.status_code == 303, paid.text
        deadline = time.monotonic() + 30
        while True:
            (status,) = run_tour(shell, commands[paying_starts:], port, known)[-1:]
            answer = xml_fields(status[1])
            if answer.get("pg_transaction_status") != "pending" or time.monotonic() > deadline:
                break
    finally:
        shell.close()

    assert (answer["pg_status"], answer["pg_payment_id"], answer["pg_order_id"]) == (
        "ok",
        init["pg_payment_id"],
        "A-1",
    )
    assert answer["pg_transaction_status"] == "ok"
    assert answer["pg_card_pan"] == "4405-64XX-XXXX-6150"

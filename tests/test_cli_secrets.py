"""``trio-conn connect`` never prints a secret: not in an argument's error, not in a message.

Through the real entry points: ``main()`` for the argument errors, a real
process connected to the fault server for what it prints.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess

import pytest
import trio

from tests.test_cli import ENV, trio_conn_command
from trio_conn.cli import main
from trio_conn.testing import open_fault_server

SECRET = "sk_live_51HxYzSecretToken"


def fragments(text: str, width: int = 8) -> set[str]:
    return {text[i : i + width] for i in range(len(text) - width + 1)}


def base64_at_every_offset(secret: bytes) -> set[str]:
    """The base64 characters that encode only ``secret``'s bytes, at each of the 3 alignments."""
    found = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret + b"\0\0\0").decode()
        start = 4 if offset else 0
        found.add(encoded[start : (offset + len(secret)) // 3 * 4])
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["-H", f"Authorization Bearer {SECRET}"],  # no colon: name and value run together
        ["-H", f"X-Api-Key={SECRET}"],
        ["-H", "X-Ok: fine", "-H", f"{SECRET}"],
        ["--heartbeat", "message", "--heartbeat-message", f'{{"token": "{SECRET}"'],
        ["--heartbeat", "message", "--heartbeat-reply", f'["{SECRET}"]'],
        ["--subprotocol", f"bearer.{SECRET}=="],  # a token where some APIs want it
        ["--subprotocol", f"bearer.{SECRET}", "--subprotocol", f"bearer.{SECRET}"],
    ],
)
def test_an_argument_error_names_the_argument_never_its_text(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect", "ws://127.0.0.1:9/", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("trio-conn: error: ")
    assert not fragments(SECRET) & fragments(line), line
    if args[0] == "-H":
        assert f"-H[{len(args) // 2 - 1}] must be 'Name: value' and has no ':'" in line


async def test_binary_and_escaped_messages_never_print_a_header_secret() -> None:
    """Real clock: a real process connected over TCP, stopped with SIGINT."""
    token = "Pa<ss>&w/rd&1234&ab/cd/ef&gh<ij>"
    raw = token.encode()
    go = token.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    php = json.dumps(token)[1:-1].replace("/", "\\/")
    pushed: list[str | bytes] = [
        raw,  # the token alone, as bytes
        b"auth=" + raw,  # at offset 5: another base64 alignment
        b"\x00\xff" + raw + b"\x01",  # among bytes that are not UTF-8
        base64.b64encode(json.dumps({"k": token}).encode()),  # base64 inside the bytes
        f'{{"echo":"{go}"}}',  # Go's encoding/json
        f'{{"echo":"{php}"}}',  # PHP's json_encode
    ]
    with trio.fail_after(30):
        async with open_fault_server() as server:
            process = await trio.lowlevel.open_process(
                trio_conn_command(
                    "connect", server.url, "-H", f"X-Api-Key: {token}", "--heartbeat", "none"
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=ENV,
            )
            assert process.stdout is not None
            stdout = b""
            try:
                await server.wait_accepted(1)
                for message in pushed:
                    await server.push(message)
                while stdout.count(b"\n") < len(pushed):
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, "trio-conn connect exited early"
                    stdout += chunk
                process.send_signal(signal.SIGINT)
                await process.wait()
            finally:
                process.kill()
                await process.wait()
                await process.stdout.aclose()
    lines = stdout.decode().splitlines()
    assert lines[:3] == [
        "base64: REDACTED ",
        "base64:YXV0aD0= REDACTED ",
        "base64:AP8= REDACTED AQ==",
    ]
    assert lines[4:] == ['{"echo":"REDACTED"}'] * 2
    for line in lines:
        assert "REDACTED" in line
        for form in (token, *base64_at_every_offset(raw)):
            assert not fragments(form) & fragments(line), (line, form)

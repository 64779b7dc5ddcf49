"""The encodings other languages write, and base64 of a payload that holds a secret.

A server written in Go, PHP or .NET echoes a secret JSON-escaped its own way;
a client library base64-encodes a whole JSON body with the token somewhere
inside. Each is found, through a real connection in every format, and for
any secret at any byte offset.
"""

from __future__ import annotations

import base64
import io
import json
import string
from urllib.parse import quote

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from tests.test_secrets import FORMATS, Format, leaked, lines_of
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    RetryPolicy,
    configure_logging,
    open_connection,
)
from trio_conn._secrets import MIN_FRAGMENT, REDACTED, SecretSet
from trio_conn.testing import open_fault_server

S = ConnectionState
PASSWORD = "S3cure&Pass<2024>\u2028x"
KEY = "sk_live_51HxYzSecretToken"


def go_json(value: object) -> str:
    """What Go's encoding/json writes: UTF-8, with & < > U+2028 U+2029 escaped."""
    text = json.dumps(value, ensure_ascii=False)
    for ch in "&<>\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def inner_base64(secret: bytes, offset: int) -> str:
    """The base64 characters that encode only ``secret``, when it starts at ``offset``."""
    encoded = base64.b64encode(b"\0" * offset + secret).decode()
    return encoded[4 if offset % 3 else 0 : (offset % 3 + len(secret)) // 3 * 4]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_go_server_echoing_the_password_and_a_base64_body_with_the_key(
    fmt: Format, autojump_clock: trio.testing.MockClock
) -> None:
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    body = base64.b64encode(json.dumps({"k": KEY}).encode()).decode()  # the key at offset 7
    async with open_fault_server() as server:
        url = server.url.replace("ws://", f"ws://bot:{quote(PASSWORD, safe='')}@")
        async with open_connection(
            url,
            open_stream=server.open_stream,
            headers=[("X-Api-Key", KEY)],
            config=ConnectionConfig(retry=RetryPolicy(jitter=0.0)),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await server.close_all(4001, "bad creds " + go_json({"pw": PASSWORD}))
            await conn.wait_for_state(S.CONNECTED)
            await server.close_all(4002, f"ctx={body}")
            await conn.wait_for_state(S.CONNECTED)
    lines = lines_of(fmt, stream)
    assert any("4001" in line for line in lines)
    assert any("4002" in line for line in lines)
    assert json.dumps({"k": KEY}).index(KEY) == 7
    carried = [go_json(PASSWORD)[1:-1], inner_base64(KEY.encode(), 7)]
    for line in lines:
        for text in carried:
            assert not leaked(text, line), (text, line)


@pytest.mark.parametrize(
    ("written", "text"),
    [
        ("Go", go_json("pa&ss<w>rd\u2028tail")[1:-1]),
        (".NET", "pa\\u0026ss\\u003Cw\\u003Erd\\u0027\\u002Btail"),
        ("PHP", json.dumps("ab/cd/ef/gh/ij/kl")[1:-1].replace("/", "\\/")),
        ("upper-case \\u", "p\\u00E4ssw\\u00F6rd-gr\\u00F6\\u00DFe"),
        ("mixed-case %", "a%2fb%2Fc%2fd%2Fe%2ff%2Fg%2fh%2Fi"),
    ],
)
def test_json_and_percent_escapes_of_other_languages(written: str, text: str) -> None:
    secret = json.loads(f'"{text}"') if "%" not in text else "a/b/c/d/e/f/g/h/i"
    secrets = SecretSet()
    secrets.add([secret])
    assert secrets.scrub(f'{{"echo":"{text}"}}') == f'{{"echo":"{REDACTED}"}}', written
    assert REDACTED in secrets.scrub(text[3:-2]), written  # a fragment, cut mid-escape


@given(
    secret=st.text(alphabet=string.printable + "é€😀", min_size=MIN_FRAGMENT, max_size=40),
    before=st.binary(max_size=7),
    after=st.binary(max_size=7),
)
def test_base64_of_a_payload_holding_the_secret_at_any_offset(
    secret: str, before: bytes, after: bytes
) -> None:
    secrets = SecretSet()
    secrets.add([secret])
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        carried = encode(before + raw + after).decode()
        inner = inner_base64(raw, len(before))
        if encode is base64.urlsafe_b64encode:
            inner = inner.replace("+", "-").replace("/", "_")
        clean = secrets.scrub(carried)
        assert REDACTED in clean
        assert not leaked(inner, clean), (carried, clean)

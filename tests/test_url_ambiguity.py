"""A password typed with an unencoded ``/``, ``?``, ``#`` or ``@`` never reaches a message.

To RFC 3986, ``ws://alice:pa#ss@host/`` is host ``alice`` with a bad port
and a fragment; to the person who typed it, a password. Such URLs are refused
at construction (the host connected to must be the host the logs show), and
the refusal shows the scheme and the host after the last ``@``, nothing else;
the password is registered as a secret all the same.
"""

from __future__ import annotations

import string
import subprocess
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_cli import ENV, trio_conn_command
from trio_conn import open_connection
from trio_conn._redact import redact_url, url_secrets
from trio_conn._secrets import MIN_FRAGMENT, REDACTED

AMBIGUOUS = [
    "ws://alice:Tr0ub4dor#3xq@127.0.0.1:9/",
    "ws://alice:Tr0ub4dor?3xq@127.0.0.1:9/feed?key=v4lue-9x",
    "ws://alice:pa/ss?w0rd-3xq@127.0.0.1:9/",
    "ws://SECRETTOKEN123#abc@127.0.0.1:9/feed",
]


def fragments(text: str) -> set[str]:
    return {text[i : i + MIN_FRAGMENT] for i in range(len(text) - MIN_FRAGMENT + 1)}


def userinfo(url: str) -> str:
    return url.partition("://")[2].rpartition("@")[0]


@pytest.mark.parametrize("url", AMBIGUOUS)
async def test_an_ambiguous_url_is_refused_showing_scheme_and_host_only(url: str) -> None:
    with pytest.raises(ValueError) as info:
        async with open_connection(url):
            pass  # pragma: no cover - refused at construction
    message = str(info.value)
    assert "percent-encode them in the userinfo as %3F and %23" in message
    assert message.endswith("@127.0.0.1:9'")
    assert not fragments(userinfo(url)) & fragments(message), message
    assert "v4lue" not in message
    secrets = url_secrets(url)
    assert userinfo(url) in secrets
    assert userinfo(url).partition(":")[2] in secrets or ":" not in userinfo(url)


def test_the_cli_refuses_it_in_one_line() -> None:
    result = subprocess.run(
        trio_conn_command("connect", AMBIGUOUS[0]),
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("trio-conn: error: url has '@' after a '?' or '#'")
    assert "Tr0ub4dor" not in line


async def test_an_at_sign_in_a_query_is_refused_too_and_its_values_never_shown() -> None:
    url = "wss://example.com/feed?email=a@b.example/x&token=t0ken-s3cret"
    with pytest.raises(ValueError, match="or '@' in the query as %40"):
        async with open_connection(url):
            pass  # pragma: no cover - refused at construction
    assert redact_url(url) == "wss://REDACTED@b.example"
    assert "t0ken-s3cret" in [part for item in url_secrets(url) for part in item.split("=")]


PASSWORD = st.text(alphabet=string.ascii_letters + string.digits + "/?#@:&=", min_size=8)


@given(user=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8), password=PASSWORD)
def test_no_typed_password_shows_in_the_redacted_url(user: str, password: str) -> None:
    for typed in (password, quote(password, safe="")):
        url = f"wss://{user}:{typed}@example.com:8443/ws?key=value"
        redacted = redact_url(url)
        assert redacted.startswith(f"wss://{REDACTED}:{REDACTED}@example.com:8443"), redacted
        assert not fragments(typed) & fragments(redacted.replace("example.com:8443", "")), redacted
        assert typed in url_secrets(url) or f"{user}:{typed}" in url_secrets(url)

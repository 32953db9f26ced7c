"""Reload without a restart: ``POST /-/reload`` (and SIGHUP, in test_operator.py) read the
web config again; a bad one changes nothing; new users and certificates apply to new
connections."""

from __future__ import annotations

import signal
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from certs import make_pki, tls_yaml
from conftest import Exporter, Simulator, basic_auth, http_get, value, wait_for

pytestmark = pytest.mark.e2e


def users(**passwords: str) -> str:
    lines = ["basic_auth_users:"]
    for user, password in passwords.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        lines.append(f"  {user}: '{hashed}'")
    return "\n".join(lines) + "\n"


def post(
    url: str, headers: dict[str, str], context: ssl.SSLContext | None = None
) -> tuple[int, str, str]:
    """(status, Allow header, body) of a POST with an empty body."""
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), response.headers.get("Allow", ""), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.headers.get("Allow", ""), err.read().decode()


def reload_state(exp: Exporter, headers: dict[str, str]) -> tuple[float | None, float | None]:
    status, body = http_get(exp.url + "/metrics", headers=headers, context=exp.ssl_context)
    assert status == 200
    text = body.decode()
    return (
        value(text, "dashscope_finetune_config_last_reload_successful"),
        value(text, "dashscope_finetune_config_last_reload_success_timestamp_seconds"),
    )


def test_reload_swaps_users_and_an_invalid_file_changes_nothing(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(users(alice="alice-Pa55word"))
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", f"--web.config.file={web}"],
        env={"DASHSCOPE_API_KEY": simulator.key},
        auth=("alice", "alice-Pa55word"),
    )
    alice, bob = basic_auth("alice", "alice-Pa55word"), basic_auth("bob", "bob-Pa55word")
    assert reload_state(exp, alice)[0] == 1
    started = reload_state(exp, alice)[1]
    # Only POST, and only with the credentials /metrics needs.
    assert post(exp.url + "/-/reload", {})[0] == 401
    assert http_get(exp.url + "/-/reload", headers=alice)[0] == 405
    assert post(exp.url + "/-/reload", bob)[0] == 401

    web.write_text(users(bob="bob-Pa55word"))
    status, _, body = post(exp.url + "/-/reload", alice)
    assert (status, body) == (200, "Reloaded\n")
    assert http_get(exp.url + "/metrics", headers=alice)[0] == 401
    successful, at = reload_state(exp, bob)
    assert successful == 1 and at is not None and started is not None and at >= started

    web.write_text("basic_auth_users:\n  carol: not-a-bcrypt-hash\n")
    status, _, body = post(exp.url + "/-/reload", bob)
    assert status == 500
    assert body.startswith("Reload failed, nothing changed: --web.config.file ")
    assert "carol" in body and "not-a-bcrypt-hash" not in body
    assert reload_state(exp, bob) == (0, at)  # bob still gets in: nothing changed
    assert exp.output().count("reload failed, configuration unchanged") == 1

    web.write_text(users(bob="bob-Pa55word"))
    exp.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reload_state(exp, bob)[0] == 1, what="SIGHUP reload")


def test_a_new_certificate_is_served_to_the_next_tls_client(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    for directory in (tmp_path / "old", tmp_path / "new"):
        directory.mkdir()
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    web = tmp_path / "web.yml"
    web.write_text(tls_yaml(old))
    old_ca = ssl.create_default_context(cafile=str(old.ca))
    new_ca = ssl.create_default_context(cafile=str(new.ca))
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", f"--web.config.file={web}"],
        env={"DASHSCOPE_API_KEY": simulator.key},
        ssl_context=old_ca,
    )
    web.write_text(tls_yaml(new))
    assert post(exp.url + "/-/reload", {}, old_ca)[0] == 200
    assert http_get(exp.url + "/-/healthy", context=new_ca) == (200, b"Healthy\n")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http_get(exp.url + "/-/healthy", context=old_ca)

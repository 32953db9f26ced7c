"""TLS and basic auth on the real exporter process, with real HTTP clients."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from certs import Pki, tls_yaml
from conftest import Exporter, Simulator, basic_auth, exporter_exe, value, wait_for

pytestmark = pytest.mark.e2e

USER = "prometheus"
PASSWORD = "s3cret-Scrape-pa55"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
REALM = 'Basic realm="ft-exporter"'
ALL_PATHS = ("/", "/metrics", "/-/healthy", "/-/ready")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path_factory.mktemp("sim"))
    yield simulator
    simulator.stop()


@pytest.fixture
def start(
    sim: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> Callable[..., Exporter]:
    """Start the exporter against the simulator with ``web_yaml`` as its web config."""

    def run(web_yaml: str, *args: str, **kw: object) -> Exporter:
        path = tmp_path / "web.yml"
        path.write_text(textwrap.dedent(web_yaml))
        return exporter_factory(
            [
                f"--dashscope.base-url={sim.url}",
                "--poll.interval=1h",
                "--log.level=debug",
                f"--web.config.file={path}",
                *args,
            ],
            env={"DASHSCOPE_API_KEY": sim.key},
            **kw,
        )

    return run


USERS = f"basic_auth_users:\n  {USER}: '{HASH}'\n"


def client_context(pki: Pki, cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def test_tls_with_basic_auth(start: Callable[..., Exporter], pki: Pki) -> None:
    exp = start(
        tls_yaml(pki) + USERS + "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        ssl_context=client_context(pki),
        auth=(USER, PASSWORD),
    )
    assert exp.url.startswith("https://")
    ca = str(pki.ca)
    ok = requests.get(exp.url + "/metrics", verify=ca, auth=(USER, PASSWORD), timeout=5)
    assert ok.status_code == 200
    assert value(ok.text, "dashscope_finetune_up", account="default") == 1
    assert ok.headers["X-Frame-Options"] == "deny"
    for path in ALL_PATHS:
        for auth in (None, (USER, "wrong-password"), ("nobody", PASSWORD), (USER, "")):
            denied = requests.get(exp.url + path, verify=ca, auth=auth, timeout=5)
            assert denied.status_code == 401, (path, auth)
            assert denied.headers["WWW-Authenticate"] == REALM
            assert denied.headers["X-Frame-Options"] == "deny"
            assert "dashscope" not in denied.text
        good = requests.get(exp.url + path, verify=ca, auth=(USER, PASSWORD), timeout=5)
        assert good.status_code == 200, path
    # The same client over http.client, keep-alive across a 401 and a 200.
    conn = http.client.HTTPSConnection("localhost", exp.port, context=client_context(pki))
    try:
        conn.request("GET", "/-/healthy")
        first = conn.getresponse()
        first.read()
        conn.request("GET", "/-/healthy", headers=basic_auth(USER, PASSWORD))
        second = conn.getresponse()
        assert (first.status, second.status, second.read()) == (401, 200, b"Healthy\n")
    finally:
        conn.close()
    log = exp.output()
    assert "unauthorised request for /metrics" in log
    assert "wrong-password" not in log
    assert PASSWORD not in log
    assert "TLS on (TLSv1_2 to TLSv1_3, client certificates: NoClientCert)" in log


def test_plain_http_slow_and_vanishing_clients_block_nobody(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(tls_yaml(pki), ssl_context=client_context(pki))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5)
    # A client that connects and never starts its handshake holds no one up.
    with socket.create_connection(("127.0.0.1", exp.port), timeout=5):
        response = requests.get(exp.url + "/metrics", verify=str(pki.ca), timeout=5)
        assert response.status_code == 200
    assert "TLS handshake with 127.0.0.1 failed" in exp.output()
    # Without basic_auth_users nothing asks for a password.
    assert requests.get(exp.url + "/-/healthy", verify=str(pki.ca), timeout=5).text == "Healthy\n"
    # A client that hangs up without close_notify before its answer is a debug line,
    # not a traceback on stderr.
    with (
        socket.create_connection(("127.0.0.1", exp.port), timeout=5) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
    wait_for(lambda: "connection from 127.0.0.1 ended" in exp.output(), what="debug line")
    assert "Traceback" not in exp.output()


def test_untrusted_server_certificate_is_refused_by_a_verifying_client(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(tls_yaml(pki), ssl_context=client_context(pki))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(exp.url + "/metrics", timeout=5)  # the system CAs know nothing of ours


def test_health_endpoints_can_be_exempted_from_basic_auth(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(
        tls_yaml(pki) + USERS,
        "--web.health-no-auth",
        ssl_context=client_context(pki),
        auth=(USER, PASSWORD),
    )
    ca = str(pki.ca)
    assert requests.get(exp.url + "/-/healthy", verify=ca, timeout=5).status_code == 200
    assert requests.get(exp.url + "/-/ready", verify=ca, timeout=5).status_code == 200
    for path in ("/", "/metrics"):
        assert requests.get(exp.url + path, verify=ca, timeout=5).status_code == 401
    assert "/-/healthy and /-/ready exempt" in exp.output()


def test_basic_auth_over_plain_http_works_with_a_warning(start: Callable[..., Exporter]) -> None:
    exp = start(USERS, auth=(USER, PASSWORD))
    assert exp.url.startswith("http://")
    assert "dashscope_finetune_up" in exp.metrics()
    assert requests.get(exp.url + "/metrics", timeout=5).status_code == 401
    assert "passwords cross the network in clear" in exp.output()


def test_mutual_tls_requires_a_certificate_from_the_client_ca(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(
        tls_yaml(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.ca)),
        ssl_context=client_context(pki, cert=True),
    )
    ca = str(pki.ca)
    failures = (requests.exceptions.SSLError, requests.exceptions.ConnectionError)
    with pytest.raises(failures):
        requests.get(exp.url + "/metrics", verify=ca, timeout=5)
    with pytest.raises(failures):
        requests.get(
            exp.url + "/metrics",
            verify=ca,
            cert=(str(pki.rogue_cert), str(pki.rogue_key)),
            timeout=5,
        )
    good = requests.get(
        exp.url + "/metrics", verify=ca, cert=(str(pki.client_cert), str(pki.client_key)), timeout=5
    )
    assert good.status_code == 200
    assert value(good.text, "dashscope_finetune_up", account="default") == 1


def test_optional_client_certificates_are_verified_when_given(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(
        tls_yaml(pki, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(pki.ca))
        + USERS,
        ssl_context=client_context(pki),
        auth=(USER, PASSWORD),
    )
    ca = str(pki.ca)
    plain = requests.get(exp.url + "/metrics", verify=ca, auth=(USER, PASSWORD), timeout=5)
    assert plain.status_code == 200
    with_cert = requests.get(
        exp.url + "/metrics",
        verify=ca,
        cert=(str(pki.client_cert), str(pki.client_key)),
        auth=(USER, PASSWORD),
        timeout=5,
    )
    assert with_cert.status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(
            exp.url + "/metrics",
            verify=ca,
            cert=(str(pki.rogue_cert), str(pki.rogue_key)),
            auth=(USER, PASSWORD),
            timeout=5,
        )


def handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version())


def test_min_version_tls13_refuses_a_tls12_only_client(
    start: Callable[..., Exporter], pki: Pki
) -> None:
    exp = start(tls_yaml(pki, min_version="TLS13"), ssl_context=client_context(pki))
    tls12_only = client_context(pki)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(exp.port, tls12_only)
    assert handshake(exp.port, client_context(pki)) == "TLSv1.3"


def test_default_versions_accept_tls12_clients(start: Callable[..., Exporter], pki: Pki) -> None:
    exp = start(tls_yaml(pki), ssl_context=client_context(pki))
    tls12_only = client_context(pki)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(exp.port, tls12_only) == "TLSv1.2"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("malformed", "invalid YAML at line 3, column 2"),
        ("unknown-key", "unknown key 'auth'"),
        ("missing-cert", "cannot read tls_server_config.cert_file"),
        ("mismatched-key", "does not match cert_file"),
        ("plaintext-password", "password of user 'prometheus' is not a bcrypt hash"),
    ],
)
def test_bad_web_config_exits_2_with_one_line(
    tmp_path: Path, pki: Pki, case: str, expected: str
) -> None:
    texts = {
        "malformed": f"basic_auth_users:\n  {USER}: '{HASH}'\n other: x\n",
        "unknown-key": "auth:\n  users: {}\n",
        "missing-cert": (
            f"tls_server_config:\n  cert_file: nope.pem\n  key_file: {pki.server_key}\n"
        ),
        "mismatched-key": (
            f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.stray_key}\n"
        ),
        "plaintext-password": f"basic_auth_users:\n  {USER}: {PASSWORD}\n",
    }
    path = tmp_path / "web.yml"
    path.write_text(texts[case])
    clean_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FT_EXPORTER_", "DASHSCOPE_"))
    }
    result = subprocess.run(
        [exporter_exe(), f"--web.config.file={path}", "--web.listen-address=127.0.0.1:0"],
        env={**clean_env, "DASHSCOPE_API_KEY": "sk-test"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ft-exporter: error: --web.config.file {str(path)!r}: ")
    assert expected in lines[0]
    assert PASSWORD not in result.stderr

"""The API side: certificate verification, --dashscope.ca-file and HTTPS_PROXY, for real."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from certs import make_pki
from conftest import Exporter, api_errors, run_cli, value, wait_for

from ft_exporter import simulator

KEY = "sk-tls-proxy-SECRET-5150"


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records where it tunnels to."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.targets: list[str] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port))) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(conn, upstream)

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([a, b], [], [], 30)
            if not ready:
                return
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[simulator.SimulatorServer, Path]]:
    pki = make_pki(tmp_path)
    server = simulator.SimulatorServer(("127.0.0.1", 0), simulator.SimulatedAccount("static"), KEY)
    server.enable_tls(str(pki.server_cert), str(pki.server_key))
    server.start()
    yield server, pki.ca
    server.stop()


def https_url(server: simulator.SimulatorServer) -> str:
    return f"https://localhost:{server.server_address[1]}"


def test_ca_file_and_https_proxy(
    tls_api: tuple[simulator.SimulatorServer, Path], exporter_factory: Callable[..., Exporter]
) -> None:
    server, ca = tls_api
    proxy = ConnectProxy()
    try:
        exp = exporter_factory(
            [
                f"--dashscope.base-url={https_url(server)}",
                f"--dashscope.ca-file={ca}",
                "--poll.interval=1h",
                "--dashscope.page-size=7",
            ],
            env={
                "DASHSCOPE_API_KEY": KEY,
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
                "NO_PROXY": "",
                "no_proxy": "",
            },
        )
        text = exp.metrics()
        assert value(text, "dashscope_finetune_up", account="default") == 1
        assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 16
        # One keep-alive tunnel carried all three pages.
        assert proxy.targets == [f"localhost:{server.server_address[1]}"]
        assert server.account.list_requests == 3
    finally:
        proxy.close()


def test_unknown_ca_is_refused(
    tls_api: tuple[simulator.SimulatorServer, Path], exporter_factory: Callable[..., Exporter]
) -> None:
    server, _ = tls_api
    exp = exporter_factory(
        [
            f"--dashscope.base-url={https_url(server)}",
            "--poll.interval=1h",
            "--dashscope.max-attempts=1",
        ],
        env={"DASHSCOPE_API_KEY": KEY},
        wait_ready=False,
    )
    wait_for(
        lambda: api_errors(exp, "ConnectionError", "") == 1,
        what="certificate refused",
    )
    assert value(exp.metrics(), "dashscope_finetune_up", account="default") == 0
    assert server.account.list_requests == 0
    with contextlib.suppress(Exception):
        exp.stop()
    assert "SSLError" in exp.output()
    assert KEY not in exp.output()


@pytest.mark.e2e
def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli(f"--dashscope.ca-file={tmp_path}/missing.pem", env={"DASHSCOPE_API_KEY": KEY})
    assert result.returncode == 2
    assert result.stderr == (
        f"ft-exporter: error: cannot read --dashscope.ca-file '{tmp_path}/missing.pem'\n"
    )

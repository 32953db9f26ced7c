"""A headless Chromium driven through the DevTools protocol over a pipe.

``--remote-debugging-pipe`` rather than a debugging port: no extra package (a websocket
client), no port to discover, and no other local user can attach to the browser and
drive it, as anyone on a shared machine can with an open debugging port. Chromium reads
commands from its fd 3 and writes answers and events to its fd 4, one JSON message per
NUL-terminated chunk.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, Queue
from typing import Any


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or not in time."""


class Chromium:
    """One headless browser with one page (a target attached in flat mode)."""

    def __init__(self, exe: str, profile: Path, log_path: Path) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()

        def pipes() -> None:
            # fds 3 and 4, as --remote-debugging-pipe expects; dup2 clears close-on-exec.
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        # Copies above 4 first, so that dup2 onto 3 and 4 never clobbers a pipe end.
        child_r = _above(to_child_r)
        child_w = _above(from_child_w)
        os.close(to_child_r)
        os.close(from_child_w)
        to_child_r, from_child_w = child_r, child_w
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--no-sandbox",  # tests run as root in CI, where the sandbox cannot start
                "--disable-gpu",
                "--disable-dev-shm-usage",  # a small /dev/shm in containers
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--force-color-profile=srgb",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pipes,
            pass_fds=(3, 4),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = os.fdopen(to_child_w, "wb", buffering=0)
        self._in = os.fdopen(from_child_r, "rb", buffering=0)
        self._next_id = 0
        self._lock = threading.Lock()
        self._answers: dict[int, Queue[dict[str, Any]]] = {}
        self.events: Queue[dict[str, Any]] = Queue()
        #: Events wait_event() passed over, for drain().
        self._passed: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.page("Page.enable")
        self.page("Runtime.enable")

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self._in.read(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiting = self._answers.get(message["id"])
                    if waiting is not None:
                        waiting.put(message)
                else:
                    self.events.put(message)

    def call(
        self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any
    ) -> dict[str, Any]:
        """Send one command and wait for its answer; raise BrowserError on an error."""
        answer: Queue[dict[str, Any]] = Queue()
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._answers[ident] = answer
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        try:
            got = answer.get(timeout=timeout)
        except Empty:
            raise BrowserError(f"no answer to {method} within {timeout}s") from None
        finally:
            with self._lock:
                del self._answers[ident]
        if "error" in got:
            raise BrowserError(f"{method}: {got['error']}")
        result: dict[str, Any] = got.get("result", {})
        return result

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page's session."""
        return self.call(method, self.session, **params)

    def wait_event(
        self,
        method: str,
        timeout: float = 20.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
        also: str = "",
    ) -> dict[str, Any]:
        """The next event ``method`` (of any session) whose params satisfy ``where``, or
        the next event ``also`` (an event that would keep ``method`` from coming)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} event within {timeout}s")
            try:
                event = self.events.get(timeout=left)
            except Empty:
                continue
            if event.get("method") == method and (where is None or where(event["params"])):
                return event
            if also and event.get("method") == also:
                return event
            self._passed.append(event)

    def drain(self) -> list[dict[str, Any]]:
        """Every event received so far and not returned by wait_event(), in order."""
        got, self._passed = self._passed, []
        while True:
            try:
                got.append(self.events.get_nowait())
            except Empty:
                return got

    def set_width(self, width: int, height: int = 900, mobile: bool = False) -> None:
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    def navigate(self, url: str, headers: dict[str, str] | None = None) -> str:
        """Load ``url`` (with ``headers`` on every request) and wait for its load event.

        Returns the browser's network error ("" when none): a 401 without credentials is
        ``net::ERR_INVALID_AUTH_CREDENTIALS``, as a headless browser can ask no one. The
        events of the load stay available to drain().
        """
        self.page("Network.enable")
        self.page("Network.setExtraHTTPHeaders", headers=headers or {})
        self.drain()
        answer = self.page("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        return str(answer.get("errorText", ""))

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page (returned by value); with
        ``await_promise``, the value the promise it gives resolves to."""
        got = self.page(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in got:
            raise BrowserError(f"{expression}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> bytes:
        """A PNG of the page (all of it with ``full_page``), written to ``path``."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            metrics = self.page("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = base64.b64decode(self.page("Page.captureScreenshot", **params)["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self._out, self._in, self._log):
            stream.close()


def _above(fd: int, floor: int = 10) -> int:
    """A close-on-exec copy of ``fd`` numbered ``floor`` or more."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)

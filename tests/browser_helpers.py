"""Headless Chromium (Debian's `chromium`) for the tests that open pages in a real browser.

`chromium_flags` are the flags every such test uses (no network beyond the page, no sync, a
throw-away profile). `Browser` drives a page over the DevTools protocol through
`--remote-debugging-pipe` (JSON messages on fds 3 and 4), so clicking needs no extra package.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium is not installed (apt-get install chromium)"


def chromium_flags(user_data_dir: Path) -> list[str]:
    """Flags for a headless, offline-quiet Chromium with its own profile folder."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", f"--user-data-dir={user_data_dir}",
    ]  # fmt: skip


def _high_fd(fd: int) -> int:
    """`fd` moved above 4, so putting the pipes on fds 3 and 4 in the child cannot clobber them."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    """A headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, user_data_dir: Path, width: int = 1280, height: int = 1000):
        assert CHROMIUM is not None, NO_CHROMIUM
        to_child, self._to_browser = (_high_fd(fd) for fd in os.pipe())
        self._from_browser, from_child = (_high_fd(fd) for fd in os.pipe())

        def put_pipes_on_3_and_4() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        flags = [*chromium_flags(user_data_dir), "--remote-debugging-pipe"]
        self.proc = subprocess.Popen(
            [CHROMIUM, *flags, f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=put_pipes_on_3_and_4,
        )
        os.close(to_child)
        os.close(from_child)
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []  # what the browser reported unasked
        threading.Thread(target=self._read, daemon=True).start()
        self.session: str | None = None

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        box = self._replies.setdefault(message["id"], queue.Queue())
                    box.put(message)
                else:
                    self.events.append(message)

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page once one is open) and return its result."""
        cid = next(self._ids)
        message: dict[str, Any] = {"id": cid, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        with self._lock:
            box = self._replies.setdefault(cid, queue.Queue())
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = box.get(timeout=timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, url: str) -> None:
        """Open `url` in a new page and attach to it."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, every: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (AssertionError on time)."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {expression!r}: {value!r}")

    def click(self, selector_js: str) -> None:
        """Press the left mouse button on the centre of the element `selector_js` evaluates to."""
        box = self.evaluate(
            f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):  # it may be gone already
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A headless Chromium driven over the DevTools protocol (websocket-client), for page tests.

No browser download, no driver: the Debian ``chromium`` binary, started by the test with a fresh
profile, talking to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,1800",
]
COMMAND_TIMEOUT = 120.0
"""Seconds a DevTools command may take (a loaded machine can stall a renderer for a while)."""


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        import websocket  # websocket-client

        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a reused profile's is stale
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # close() ends the group: Chromium forks a browser process
        )
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start; see {log}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        # no Origin header: Chromium 111+ refuses DevTools websockets from other origins
        self.ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its result (``COMMAND_TIMEOUT`` at most)."""
        self._id += 1
        self.ws.settimeout(COMMAND_TIMEOUT)  # wait_event may have left a short one
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for an event (already received ones count)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str, cookies: dict[str, str] | None = None) -> None:
        """Load ``url`` (with cookies for its origin) and wait for its load event."""
        # no Network.enable: its events (every request the page makes) would pile up unread
        # while a test waits on something else
        self.call("Page.enable")
        for name, value in (cookies or {}).items():
            self.call("Network.setCookie", name=name, value=value, url=url)
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30, what: str = "") -> Any:
        """Poll a JavaScript expression until its value is truthy; that value. TimeoutError
        (naming ``what``, or the expression) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is navigating: its context is gone for a moment
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout:g} s: {what or expression}")
            time.sleep(0.2)

    def click(self, selector: str, text: str | None = None, timeout: float = 30) -> None:
        """A real mouse click (pressed, released) in the middle of the first visible element that
        matches the CSS ``selector`` (and whose text, trimmed, is ``text`` when given), once
        there is one and it is enabled."""
        find = f"""(() => {{
            const want = {json.dumps(text)};
            const el = Array.from(document.querySelectorAll({json.dumps(selector)})).find(e =>
                e.getClientRects().length > 0 && !e.disabled &&
                (want === null || e.innerText.trim() === want));
            if (!el) return null;
            el.scrollIntoView({{block: "center", inline: "center"}});
            const r = el.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()"""
        what = f"an enabled {selector}" + (f" reading {text!r}" if text is not None else "")
        at = self.wait_for(find, timeout, what)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=at["x"],
                y=at["y"],
                button="none" if kind == "mouseMoved" else "left",
                clickCount=0 if kind == "mouseMoved" else 1,
            )

    def press(self, key: str, key_code: int = 0, *, code: str = "", **extra: Any) -> None:
        """One key pressed and released in the focused element, e.g. ``press("Tab", 9)``;
        ``extra``: more ``Input.dispatchKeyEvent`` fields (``modifiers``, ``commands``)."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code or key,
                windowsVirtualKeyCode=key_code,
                **extra,
            )

    def type_into(self, selector: str, text: str, timeout: float = 30) -> None:
        """Replace the value of a text field as a user does: click it, select all it holds
        (Ctrl+A), type ``text`` (``Input.insertText``: the page sees real input events)."""
        self.click(selector, timeout=timeout)
        self.wait_for(
            f"document.activeElement === document.querySelector({json.dumps(selector)})",
            5,
            f"{selector} focused",
        )
        # Ctrl+A; headless Chromium runs no shortcut of its own, so the key names its command
        self.press("a", 65, code="KeyA", modifiers=2, commands=["selectAll"])
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        """Stop the browser."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        # the whole process group: the launched process may have ended while the browser
        # process it forked lives on
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.proc.wait()
        self._log.close()

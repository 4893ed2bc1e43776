"""Open a page in headless Chromium over the DevTools protocol (on a pipe: no ports, no extra packages) and
report its console errors, uncaught exceptions and images."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@dataclass
class PageLoad:
    errors: list[str]  # console errors, failed loads and uncaught exceptions
    images: list[dict]  # {"alt", "loaded", "width"} per <img>
    figure_ids: list[str]
    overflowing_tables: list[str]  # captions of tables wider than the page's body (a sideways scroll)


class _DevTools:
    def __init__(self, user_data_dir: str):
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()

        def use_fds_3_and_4():  # --remote-debugging-pipe reads commands on fd 3 and writes on fd 4
            commands, replies = os.dup(command_read), os.dup(reply_write)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--window-size=1400,1000",  # a laptop's browser window: the body's max-width is 1400px
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI containers run as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                f"--user-data-dir={user_data_dir}",
                "about:blank",
            ],
            preexec_fn=use_fds_3_and_4,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(reply_write)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=30.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout=30.0) -> dict:
        seen = next((e for e in self.events if e.get("method") == event), None)
        while seen is None:
            message = self._receive(timeout)
            self.events.append(message)
            if message.get("method") == event:
                seen = message
        return seen

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._reply_read], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer over the DevTools pipe")
            chunk = os.read(self._reply_read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._command_write)
        os.close(self._reply_read)


def load_page(path: Path) -> PageLoad:
    with tempfile.TemporaryDirectory() as profile:
        tools = _DevTools(profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            tools.wait_for("Page.loadEventFired")
            images = tools.send(
                "Runtime.evaluate",
                {
                    "expression": "JSON.stringify([...document.images].map(i => "
                    "({alt: i.alt, loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth})))",
                    "returnByValue": True,
                },
                session=session,
            )["result"]["value"]
            figure_ids = tools.send(
                "Runtime.evaluate",
                {
                    "expression": "JSON.stringify([...document.querySelectorAll('figure')].map(f => f.id))",
                    "returnByValue": True,
                },
                session=session,
            )["result"]["value"]
            overflowing = tools.send(
                "Runtime.evaluate",
                {
                    "expression": "JSON.stringify([...document.querySelectorAll('table')].filter(t => "
                    "t.getBoundingClientRect().right > document.body.getBoundingClientRect().right + 1)"
                    ".map(t => t.caption ? t.caption.textContent : '?'))",
                    "returnByValue": True,
                },
                session=session,
            )["result"]["value"]
        finally:
            tools.close()
    errors = []
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", "error"))
    return PageLoad(errors, json.loads(images), json.loads(figure_ids), json.loads(overflowing))

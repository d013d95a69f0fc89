"""A headless Chromium from the OS packages, driven over the DevTools protocol on a pipe (stdlib only).

``load_page(path, screenshot)`` opens a file from disk and reports what went wrong while loading it:
failed requests, console errors, uncaught exceptions and images that did not decode.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


# exec chromium with the pipe ends on fds 3 and 4 (via fresh copies: either end may be fd 3 or 4)
ON_FDS_3_AND_4 = (
    "import os, sys; read, write = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2]));"
    " os.dup2(read, 3); os.dup2(write, 4); os.set_inheritable(3, True); os.set_inheritable(4, True);"
    " os.execv(sys.argv[3], sys.argv[3:])"
)


class _Pipe:
    """Chrome's ``--remote-debugging-pipe``: it reads commands on fd 3, writes messages on fd 4,
    each one JSON object ended by a NUL byte."""

    def __init__(self, executable: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        args = [
            "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--window-size=1280,900",
            f"--user-data-dir={profile}", "about:blank",
        ]  # fmt: skip
        # Chromium writes ~/.config/chromium (crash reports) and ~/.cache/dconf whatever
        # --user-data-dir says: give it a home of its own inside the profile
        home = profile / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local" / "share"),
        }  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ON_FDS_3_AND_4, str(to_chrome_r), str(from_chrome_w), executable, *args],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def load_page(page: Path, screenshot: Path, executable: str | None = None) -> dict:
    """Load ``page`` from disk, screenshot the whole page; return what failed while loading."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium found")
    with tempfile.TemporaryDirectory(prefix="autolabel-chromium-") as profile:
        pipe = _Pipe(executable, Path(profile))
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            broken = pipe.send(
                "Runtime.evaluate",
                {
                    "expression": "JSON.stringify({images: document.images.length, broken: Array.from("
                    "document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),"
                    " remote: Array.from(document.querySelectorAll('[src],[href]')).map(e => e.src || e.href)"
                    ".filter(u => /^(https?:)?\\/\\//.test(u)), title: document.title})",
                    "returnByValue": True,
                },
                session=session,
            )["result"]["value"]
            shot = pipe.send(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            events = pipe.events
        finally:
            pipe.close()
    page_state = json.loads(broken)
    return {
        **page_state,
        "failed_requests": [e["params"] for e in events if e.get("method") == "Network.loadingFailed"],
        "console_errors": [
            e["params"]
            for e in events
            if (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
        ],
        "exceptions": [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"],
    }

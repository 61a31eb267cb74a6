"""Renders an HTML file in headless Chromium and reports what went wrong on the page.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
commands on fd 3, answers and events on fd 4, each a JSON message ended by a
NUL byte), not with ``--screenshot``: only the protocol reports every console
error with its level, every uncaught exception and every failed or outgoing
network request, and lets the test read the rendered text. ``--enable-logging``
on stderr prints console messages without their level and leaves failed
resource loads out.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

# No network, no background services, no first-run UI; no sandbox and no GPU
# (root in a chroot has neither a usable namespace sandbox nor a GPU).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclasses.dataclass
class Rendered:
    png: Path
    errors: list[str]  # console errors, uncaught exceptions, failed loads, errors Chromium logged
    requests: list[str]  # every URL the page asked for, the page itself included
    text: str  # document.body.innerText: what a reader sees
    seconds: float  # from starting Chromium to the screenshot on disk


class _Pipe:
    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int, deadline: float):
        self.process, self.to_browser, self.from_browser, self.deadline = process, to_browser, from_browser, deadline
        self.buffer, self.next_id, self.events = b"", 0, []

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            if select.select([self.from_browser], [], [], left)[0]:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit code {self.process.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Sends one command and returns its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read_message())


def _problems(events: list[dict]) -> tuple[list[str], list[str]]:
    """The page's errors and requested URLs, from the protocol's events."""
    errors, requests, urls = [], [], {}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            values = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            errors.append(f"console.{params['type']}: {' '.join(values)}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("uncaught: " + details.get("exception", {}).get("description", details["text"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
            requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            errors.append(f"failed load: {params['errorText']} {urls.get(params['requestId'], '')}".strip())
    return errors, requests


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor above 4, so the child's dup2 onto 3 and 4 always copies
    (dup2 onto itself would keep close-on-exec, and Chromium would find the pipe closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


def render(page: Path, png: Path, profile: Path, width: int = 1200, height: int = 3000,
           timeout_s: float = 60) -> Rendered:
    """Opens ``page`` in a fresh profile, waits for its load event, screenshots the window to ``png``."""
    started = time.monotonic()
    commands_read, commands_write = map(_above_4, os.pipe())
    answers_read, answers_write = map(_above_4, os.pipe())

    def on_fds_3_and_4():  # where --remote-debugging-pipe expects them, in the child only
        os.dup2(commands_read, 3)
        os.dup2(answers_write, 4)

    log = open(profile.parent / f"{profile.name}.stderr", "w+")
    process = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
         "--remote-debugging-pipe", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=on_fds_3_and_4, close_fds=False)
    os.close(commands_read)
    os.close(answers_write)
    pipe = _Pipe(process, commands_write, answers_read, started + timeout_s)
    try:
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session)
        # A tab's viewport is smaller than the window (and has a minimum width): set it exactly.
        pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        pipe.call("Page.navigate", session, url=page.resolve().as_uri())
        pipe.wait_for("Page.loadEventFired")
        text = pipe.call("Runtime.evaluate", session, expression="document.body.innerText",
                         returnByValue=True)["result"].get("value", "")
        shot = pipe.call("Page.captureScreenshot", session, format="png")["data"]
        png.write_bytes(base64.b64decode(shot))
        seconds = time.monotonic() - started
        try:
            pipe.call("Browser.close")
        except RuntimeError:
            pass  # the browser may close the pipe before it answers
        errors, requests = _problems(pipe.events)
        return Rendered(png=png, errors=errors, requests=requests, text=text, seconds=seconds)
    except (TimeoutError, RuntimeError) as exc:
        log.seek(0)
        raise RuntimeError(f"{exc}; Chromium's log ends with:\n{log.read()[-3000:]}") from exc
    finally:
        os.close(commands_write)
        os.close(answers_read)
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

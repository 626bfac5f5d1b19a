#!/usr/bin/env python3
"""Takes a screenshot of lesson 14's live dashboard once it has results, and checks that it drew something.

Runs the story's `--serve` mode (`cargo run -q -p solution-14 -- --serve`, the embedded broker by default), reads the
dashboard's address from the line it prints (`dashboard: http://127.0.0.1:PORT`), polls `GET /windows` until at least
--min-windows windows have closed (a simulated minute is 5 s, so about 15 s), then opens the page in headless
Chromium (Debian's `chromium`, driven over its DevTools pipe by `devtools.py`, as `check-diagrams.py` does) at
1400x1100, waits until the page says it has drawn that many windows, and takes a screenshot. It checks that the PNG
is there, at least 1400x1100, and not blank — that the page drew its charts (see `check_png`) —, that the page
reported no error, stops the server (SIGINT, then SIGKILL after a deadline), and prints one line:

    ok  dashboard screenshot: target/workbook/screenshots/dashboard.png (1400x1100, 123456 bytes)

or why not, and exits 1.

    scripts/screenshot-dashboard.py [--package lesson-14] [--out PNG] [--min-windows N] [--timeout S]

Needs python3 and chromium (`apt-get install -y chromium`); nothing else.
"""

import argparse
import base64
import collections
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

from devtools import Browser

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (1400, 1100)
# The dashboard's bar colours (src/dashboard.html's `colours`): views, carts, removals, purchases.
BAR_COLOURS = {(0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0xE4, 0x57, 0x56), (0x54, 0xA2, 0x4B)}
# How many pixels of the bars' colours the charts have at least once they drew results: two windows' bars make tens of
# thousands, while the legends' seven 18x18 squares (drawn even when every bar is 0 high) make 2268.
MIN_BAR_PIXELS = 10000
# How many distinct colours a page with text and charts has at least (anti-aliased text alone makes hundreds; a
# blank page has one or two).
MIN_COLOURS = 64


# The local server directly, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failed(Exception):
    pass


def read_lines(stream, into, echo):
    """Reads `stream` line by line into the queue `into` (a deque), echoing each with the prefix `echo`."""
    for line in stream:
        into.append(line.rstrip("\n"))
        if echo is not None:
            print(f"{echo}{line.rstrip()}", flush=True)


def start_server(package):
    # A session of its own: the server (and anything it starts) gets the signals as one group, as Ctrl-C would.
    process = subprocess.Popen(
        ["cargo", "run", "-q", "-p", package, "--", "--serve"], cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        start_new_session=True)
    stdout, stderr = collections.deque(), collections.deque(maxlen=40)
    threading.Thread(target=read_lines, args=(process.stdout, stdout, "   | "), daemon=True).start()
    threading.Thread(target=read_lines, args=(process.stderr, stderr, None), daemon=True).start()
    return process, stdout, stderr


def stop_server(process, within=20.0):
    """SIGINT (the story's Ctrl-C: it stops its consumers and aggregator cleanly), then SIGKILL after `within` s."""
    if process is None:
        return "was not started"
    if process.poll() is not None:
        return f"had already ended (exit {process.returncode})"
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=within)
        return f"stopped by SIGINT (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return f"did not stop within {within:.0f} s of SIGINT: killed"


def dashboard_url(process, stdout, deadline):
    """The address of the `dashboard: http://…` line, waiting for it (cargo may build first) until `deadline`."""
    while time.monotonic() < deadline:
        while stdout:
            match = re.match(r"dashboard: (http://\S+)", stdout.popleft())
            if match:
                return match.group(1)
        if process.poll() is not None:
            raise Failed(f"the server ended (exit {process.returncode}) before printing its address")
        time.sleep(0.1)
    raise Failed("the server printed no `dashboard: http://…` line in time")


def windows_so_far(url):
    try:
        with DIRECT.open(f"{url}/windows", timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def wait_for_windows(process, url, count, deadline):
    """Polls GET /windows until it answers at least `count` results, until `deadline`; the results."""
    results = None
    while time.monotonic() < deadline:
        results = windows_so_far(url)
        if results is not None and len(results) >= count:
            return results
        if process.poll() is not None:
            raise Failed(f"the server ended (exit {process.returncode}) before {count} windows closed")
        time.sleep(0.5)
    raise Failed(f"GET /windows answered {len(results) if results is not None else 'nothing'}, not {count} windows, "
                 f"in time")


# Runs in the page: waits until its status line says at least `count` windows closed (the replay from /events has
# arrived and `draw()` has run), then for two frames so that the canvases are painted; the status line, or null.
WAIT_FOR_DRAWING = r"""
async (count, deadlineMs) => {
  const status = () => document.getElementById('status').textContent;
  const drawn = () => { const m = status().match(/^(\d+) windows closed/); return m && Number(m[1]) >= count; };
  const until = Date.now() + deadlineMs;
  while (Date.now() < until && !drawn()) await new Promise(r => setTimeout(r, 100));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return drawn() ? status() : null;
}
"""


def screenshot(browser, url, out, count, within=20):
    """Opens `url` in a 1400x1100 viewport, waits for the page to draw `count` windows, writes the PNG to `out`.

    Not `chromium --screenshot`: with --virtual-time-budget, Chromium lets virtual time run only while no request is
    pending, and /events is a request that never ends, so it never shoots; without it, it shoots at the load event,
    before the event stream has delivered anything (the page says "connecting…", every chart empty). Over DevTools
    the script waits for what it needs to see, with a deadline."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    try:
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
                     deviceScaleFactor=1, mobile=False)
        browser.send("Page.enable", session)
        browser.send("Runtime.enable", session)
        browser.send("Page.navigate", session, url=url)
        browser.wait_event("Page.loadEventFired", session)
        result = browser.send("Runtime.evaluate", session, expression=f"({WAIT_FOR_DRAWING})({count}, {within * 1000})",
                              awaitPromise=True, returnByValue=True, timeout=within + 30)
        if "exceptionDetails" in result:
            raise Failed(f"the page's script failed: {result['exceptionDetails']}")
        status = result["result"].get("value")
        if status is None:
            raise Failed(f"the page did not show {count} closed windows within {within} s")
        problems = [e for e in browser.take_events(session, {"Runtime.exceptionThrown", "Runtime.consoleAPICalled"})
                    if e["method"] == "Runtime.exceptionThrown" or e["params"].get("type") == "error"]
        if problems:
            raise Failed(f"the page reported {len(problems)} error(s), the first: {json.dumps(problems[0])[:400]}")
        shot = browser.send("Page.captureScreenshot", session, format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return status
    finally:
        browser.send("Target.closeTarget", targetId=target)


def decode_png(data):
    """(width, height, rows of (r, g, b) tuples): an 8-bit RGB or RGBA, non-interlaced PNG, as Chromium writes them.

    By hand with zlib (the standard library has no PNG reader): the IDAT chunks, inflated, are one filter-type byte
    and the filtered bytes per row; each row is unfiltered against the previous one (PNG spec, section 9)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise Failed("the screenshot is not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise Failed("the screenshot has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise Failed(f"a PNG this script does not read (depth {depth}, colour type {colour}, interlace {interlace})")
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, prev = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    return width, height, [[tuple(row[x:x + 3]) for x in range(0, stride, bpp)] for row in rows]


def check_png(path):
    """(width, height, bytes, distinct colours, pixels of bars) of the screenshot at `path`; raises Failed when it is
    too small or blank.

    Blank is judged on the decoded pixels rather than the file's size. Sizes do differ (at 1400x1100 the page with its
    sections but no results, every chart empty, is 26 KB; with two windows drawn, 60-73 KB; a blank page a few KB),
    but a threshold between them moves with the fonts, the window size and Chromium's encoder, and says nothing of
    *what* drew. Decoding costs about 2 s of pure Python; then text and charts make hundreds of distinct colours
    (a blank page one or two), and only drawn bars put many pixels in the bars' colours."""
    data = path.read_bytes()
    width, height, pixels = decode_png(data)
    if width < WINDOW[0] or height < WINDOW[1]:
        raise Failed(f"the screenshot is {width}x{height}, smaller than {WINDOW[0]}x{WINDOW[1]}")
    counts = collections.Counter(pixel for row in pixels for pixel in row)
    if len(counts) < MIN_COLOURS:
        raise Failed(f"the screenshot looks blank: {len(counts)} distinct colours (fewer than {MIN_COLOURS})")
    bars = sum(counts[c] for c in BAR_COLOURS)
    if bars < MIN_BAR_PIXELS:
        raise Failed(f"the charts look empty: {bars} pixels in the bars' colours (fewer than {MIN_BAR_PIXELS})")
    return width, height, len(data), len(counts), bars


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="solution-14", help="the crate to run (default solution-14)")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "workbook" / "screenshots" / "dashboard.png",
                        help="where to write the PNG (default target/workbook/screenshots/dashboard.png)")
    parser.add_argument("--min-windows", type=int, default=2, help="closed windows to wait for (default 2)")
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds to wait for them once the server is up (default 90)")
    parser.add_argument("--build-timeout", type=float, default=600.0,
                        help="seconds to wait for the server's address, cargo's build included (default 600)")
    args = parser.parse_args()

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        sys.exit("chromium is not installed: apt-get update && apt-get install -y chromium")
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out

    started = time.monotonic()
    profile = tempfile.mkdtemp(prefix="screenshot-dashboard-")
    # The browser before the server's reader threads: its preexec_fn and threads do not mix.
    browser = Browser(browser_path, profile)
    process, stderr = None, []
    try:
        process, stdout, stderr = start_server(args.package)
        url = dashboard_url(process, stdout, time.monotonic() + args.build_timeout)
        results = wait_for_windows(process, url, args.min_windows, time.monotonic() + args.timeout)
        print(f"   {len(results)} windows closed after {time.monotonic() - started:.0f} s; screenshot of {url}")
        status = screenshot(browser, url, out, args.min_windows)
        print(f"   the page says: {status}")
        width, height, size, colours, bars = check_png(out)
    except Failed as failure:
        stopped = stop_server(process)
        print(f"FAIL dashboard screenshot: {failure}")
        print(f"   the server {stopped}; the last lines of its stderr:")
        for line in stderr:
            print(f"   ! {line}")
        sys.exit(1)
    except BaseException:
        stop_server(process)
        raise
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    stopped = stop_server(process)
    print(f"   the server {stopped}; {colours} colours, {bars} px of bars")
    print(f"ok  dashboard screenshot: {shown} ({width}x{height}, {size} bytes)")


if __name__ == "__main__":
    main()

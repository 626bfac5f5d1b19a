#!/usr/bin/env python3
"""Checks every page of the built book as a reader's browser shows it, in headless Chromium.

Serves the built book on a local port and opens each page at 1280x800. A page fails on: a `{{#...}}` directive
left unexpanded (a missing include or anchor), a mermaid block that did not become an SVG (or became mermaid's
error picture), a link, image, script or stylesheet inside the book that leads to no file (or to an anchor its
page does not have), anything fetched from outside the book (it must read offline), and any console error or
uncaught exception. Then, book-wide: the search, opened from file:// with the network switched off, must find a
known word; print.html must hold every chapter of SUMMARY.md. Each problem is printed as `FAIL page: problem`.
One chapter's screenshot is written for a look by eye (CI keeps it with its logs).

    scripts/check-book.py [--no-build] [--book DIR] [--screenshot PNG] [PAGE ...]
    scripts/check-book.py --self-test

PAGE is a path in the built book (`lessons/05-offsets.html`); by default every page, and the book-wide checks run
only then. --self-test builds a copy of the book (with the pinned mdBook that `cargo xtask book` installs) where one
chapter has a broken diagram, include, link and image, a console error and an exception, and passes only if the
check fails on that chapter naming each. Needs python3 and Debian's chromium (`apt-get install -y chromium`);
`devtools.py` drives it.
"""

import argparse
import base64
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devtools import Browser, serve

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "mdbook" / "book"
SUMMARY = ROOT / "docs" / "SUMMARY.md"
VIEWPORT = (1280, 800)
SCREENSHOT_PAGE = "lessons/01-first-event.html"
SCREENSHOT = ROOT / "target" / "workbook" / "book-screenshot.png"
SEARCH_WORD = "partition"  # in every lesson: the search must find it
PINNED_TOOLS = Path.home() / ".cache" / "kafka-workbook" / "tools" / "bin"  # where `cargo xtask book` puts them

# Runs in the page once it has loaded: waits for mermaid to draw, then reports what the page is made of.
INSPECT = r"""
async (deadlineMs) => {
  const pres = () => [...document.querySelectorAll('pre.mermaid')];
  const until = Date.now() + deadlineMs;
  while (Date.now() < until && !pres().every(p => p.querySelector('svg'))) {
    await new Promise(r => setTimeout(r, 100));
  }
  const diagrams = pres().map(pre => {
    const svg = pre.querySelector('svg');
    if (!svg) return 'mermaid drew nothing (' + pre.textContent.trim().slice(0, 40) + '…)';
    if (svg.getAttribute('aria-roledescription') === 'error') {
      const said = [...svg.querySelectorAll('text')].map(t => t.textContent.trim()).filter(t => t).join(' / ');
      return 'mermaid could not draw it: ' + said.slice(0, 100);
    }
    return null;
  });
  const text = document.body.textContent;
  const directives = [...new Set(text.match(/\{\{#[^\n]{0,70}?(\}\}|$)/gm) || [])];
  const urls = [
    ...[...document.querySelectorAll('a[href]')].map(a => ['link', a.getAttribute('href'), a.href]),
    ...[...document.images].map(i => ['image', i.getAttribute('src'), i.currentSrc || i.src]),
    ...[...document.querySelectorAll('script[src]')].map(s => ['script', s.getAttribute('src'), s.src]),
    ...[...document.querySelectorAll('link[href]')].map(l => ['stylesheet', l.getAttribute('href'), l.href]),
  ];
  const brokenImages = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute('src'));
  const fetched = performance.getEntriesByType('resource').map(r => r.name);
  const h1 = [...document.querySelectorAll('main h1')].map(h => h.textContent.trim());
  return { diagrams, directives, urls, brokenImages, fetched, h1 };
}
"""

# Runs in index.html opened from file:// with the network off: the reader's search, as typed.
SEARCH = r"""
async (word) => {
  document.getElementById('mdbook-search-toggle').click();
  const bar = document.getElementById('mdbook-searchbar');
  const results = document.getElementById('mdbook-searchresults');
  const until = Date.now() + 10000;
  while (Date.now() < until) {
    bar.value = word;
    bar.dispatchEvent(new KeyboardEvent('keyup', { bubbles: true }));
    if (results.querySelectorAll('li').length) break;
    await new Promise(r => setTimeout(r, 200));
  }
  return [...results.querySelectorAll('li a')].map(a => a.textContent.trim());
}
"""

CONSOLE_EVENTS = ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")


def console_errors(events):
    """The errors among console calls, uncaught exceptions and browser log entries (a failed load)."""
    errors = []
    for event in events:
        params = event["params"]
        if event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            errors.append("console error: " + " ".join(args)[:200])
        elif event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            errors.append("uncaught exception: " + text.splitlines()[0][:200] if text else "uncaught exception")
        elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if entry.get("url", "").endswith("/favicon.ico"):
                continue  # the browser's own guess on a page that names no icon (toc.html), not the book's request
            errors.append(f"browser error: {entry['text'][:160]}" + (f" ({entry['url']})" if entry.get("url") else ""))
    return errors


class Book:
    """The built book on disk: which URLs of its server lead to a file, and which ids each page has."""

    def __init__(self, directory, origin):
        self.directory = directory
        self.origin = origin
        self._ids = {}

    def file(self, url):
        path = unquote(urlsplit(url).path).lstrip("/")
        target = self.directory / path
        return target / "index.html" if path == "" or path.endswith("/") or target.is_dir() else target

    def ids(self, file):
        if file not in self._ids:
            text = file.read_text(encoding="utf-8", errors="replace")
            self._ids[file] = {html.unescape(m) for m in re.findall(r'\b(?:id|name)="([^"]*)"', text)}
        return self._ids[file]

    def problems(self, page, found):
        """What is wrong with one page, from what INSPECT found in it."""
        problems = []
        for index, error in enumerate(found["diagrams"]):
            if error:
                problems.append(f"diagram #{index + 1}: {error}")
        for directive in found["directives"]:
            problems.append(f"unexpanded directive {directive!r}")
        for kind, written, url in found["urls"]:
            parts = urlsplit(url)
            if parts.scheme in ("mailto", "javascript", "data", "blob") or not written:
                continue
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                continue  # a link out of the book: a reader's click, not part of the book
            target = self.file(url)
            if written.startswith("#"):
                target = self.directory / page  # the page's own anchor (404.html's <base> points it elsewhere)
            if not target.is_file():
                problems.append(f"broken {kind} {written!r}: no file {target.relative_to(self.directory)}")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in self.ids(target):
                problems.append(f"broken {kind} {written!r}: {target.relative_to(self.directory)} has no "
                                f"#{unquote(parts.fragment)}")
        for src in found["brokenImages"]:
            problems.append(f"image {src!r} did not load")
        for url in found["fetched"]:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and f"{parts.scheme}://{parts.netloc}" != self.origin:
                problems.append(f"fetches {url} from the network (the book must read offline)")
        return problems


def summary_chapters(summary):
    """(title, page.html) for every chapter SUMMARY.md links, in order."""
    return [(title, path.removesuffix(".md") + ".html")
            for title, path in re.findall(r"\[([^\]]+)\]\(([^)#]+\.md)\)", summary.read_text(encoding="utf-8"))]


def open_page(browser, url):
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    browser.send("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0], height=VIEWPORT[1],
                 deviceScaleFactor=1, mobile=False)
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session)
    return target, session


def navigate(browser, session, url):
    browser.send("Page.navigate", session, url=url)
    browser.wait_event("Page.loadEventFired", session)


def evaluate(browser, session, expression):
    result = browser.send("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                          returnByValue=True)
    if "exceptionDetails" in result:
        raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description", result))
    return result["result"]["value"]


def close_page(browser, target, session):
    browser.send("Target.closeTarget", targetId=target)
    browser.take_events(session, None)


def screenshot(browser, session, out):
    size = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": VIEWPORT[0], "height": min(size["height"], 8000), "scale": 1}
    shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True, clip=clip)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out.stat().st_size


def check(book_dir, pages, whole_book, shot_to, summary=SUMMARY):
    """Runs the checks; prints a line per page and per book-wide check; returns the problems as (page, problem)."""
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        sys.exit("chromium is not installed: apt-get update && apt-get install -y chromium")
    failures = []
    profile = tempfile.mkdtemp(prefix="check-book-")
    browser = server = None
    h1s = {}
    try:
        browser = Browser(browser_path, profile)  # before the server's thread: preexec_fn and threads do not mix
        server = serve(book_dir)
        origin = f"http://127.0.0.1:{server.server_port}"
        book = Book(book_dir, origin)
        for page in pages:
            target, session = open_page(browser, page)
            navigate(browser, session, f"{origin}/{page}")
            found = evaluate(browser, session, f"({INSPECT})(20000)")
            problems = book.problems(page, found)
            problems += console_errors(browser.take_events(session, CONSOLE_EVENTS, wait=0.2))
            h1s[page] = found["h1"]
            if shot_to and page == SCREENSHOT_PAGE and not problems:
                size = screenshot(browser, session, shot_to)
                print(f"     screenshot of {page}: {shot_to} ({size} bytes)")
            close_page(browser, target, session)
            failures += [(page, problem) for problem in problems]
            diagrams = len(found["diagrams"])
            print(f"{'FAIL' if problems else 'ok  '} {page}: {diagrams} diagram(s), {len(found['urls'])} links and "
                  f"resources" + "".join(f"\n       {problem}" for problem in problems))
        if whole_book:
            failures += check_search(browser, book_dir)
            failures += check_print(summary, h1s)
    finally:
        if browser:
            browser.close()
        if server:
            server.shutdown()
            server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    return failures


def check_search(browser, book_dir):
    """The search of index.html opened as a file, the network off: its index must be there and find SEARCH_WORD."""
    if not list(book_dir.glob("searchindex*.js")):
        print("FAIL search: no searchindex*.js in the book (is [output.html.search] off?)")
        return [("search", "no search index")]
    target, session = open_page(browser, "index.html")
    browser.send("Network.enable", session)
    browser.send("Network.emulateNetworkConditions", session, offline=True, latency=0, downloadThroughput=-1,
                 uploadThroughput=-1)
    navigate(browser, session, (book_dir / "index.html").resolve().as_uri())
    results = evaluate(browser, session, f"({SEARCH})({SEARCH_WORD!r})")
    errors = console_errors(browser.take_events(session, CONSOLE_EVENTS, wait=0.2))
    close_page(browser, target, session)
    problems = ([] if results else [f"a search for {SEARCH_WORD!r} found nothing"]) + errors
    print(f"{'FAIL' if problems else 'ok  '} search, offline from file://: {len(results)} results for "
          f"{SEARCH_WORD!r}" + (f", first {results[0]!r}" if results else "")
          + "".join(f"\n       {problem}" for problem in problems))
    return [("search", problem) for problem in problems]


def check_print(summary, h1s):
    """print.html must show every chapter of SUMMARY.md: each chapter's title (its first heading) is a heading
    there."""
    printed = h1s.get("print.html", [])
    problems = []
    chapters = summary_chapters(summary)
    for title, page in chapters:
        if page not in h1s:
            problems.append(f"chapter {title!r} ({page}) was not built")
        elif not h1s[page]:
            problems.append(f"chapter {title!r} ({page}) has no heading to find in print.html")
        elif h1s[page][0] not in printed:
            problems.append(f"chapter {title!r} ({page}) is missing: no heading {h1s[page][0]!r}")
    print(f"{'FAIL' if problems else 'ok  '} print.html: {len(chapters) - len(problems)} of the {len(chapters)} "
          f"chapters of SUMMARY.md" + "".join(f"\n       {problem}" for problem in problems))
    return [("print.html", problem) for problem in problems]


def all_pages(book_dir):
    return sorted(str(p.relative_to(book_dir)) for p in book_dir.rglob("*.html"))


def self_test():
    """Builds a copy of the book with a chapter broken on purpose; the check must fail on it, naming each break."""
    mdbook = next((p for p in (PINNED_TOOLS / "mdbook", shutil.which("mdbook")) if p and Path(p).is_file()), None)
    if not mdbook:
        sys.exit("no mdbook: `cargo xtask book` installs the pinned one")
    page = SCREENSHOT_PAGE
    chapter = Path("docs") / page.replace(".html", ".md")
    with tempfile.TemporaryDirectory(prefix="check-book-self-test-") as scratch:
        copy = Path(scratch)
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copytree(ROOT / "mdbook", copy / "mdbook", ignore=shutil.ignore_patterns("book"))
        for entry in ROOT.iterdir():  # what the chapters include (../../lessons, ../kit, …), as it is
            if entry.name not in ("docs", "mdbook", "target", ".git"):
                (copy / entry.name).symlink_to(entry)
        text = (copy / chapter).read_text(encoding="utf-8")
        assert "```mermaid\n" in text, f"{chapter} has no diagram to break"
        broken = text.replace("```mermaid\n", "```mermaid\nthis is not a diagram\n", 1)
        broken += ("\n{{#include ../../no-such-file.md}}\n\n[a chapter that is not there](no-such-chapter.md)\n\n"
                   "![a picture that is not there](no-such-picture.png)\n\n"
                   "<script>console.error('logged on purpose')</script>\n<script>null.thrownOnPurpose()</script>\n")
        (copy / chapter).write_text(broken, encoding="utf-8")
        tools_path = f"{Path(mdbook).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        build = subprocess.run([str(mdbook), "build", str(copy / "mdbook")], capture_output=True, text=True,
                               env={**os.environ, "PATH": tools_path})
        if build.returncode != 0:
            sys.exit(f"self-test: the broken copy did not build:\n{build.stdout}{build.stderr}")
        print(f"self-test: {chapter} broken on purpose in a copy of the book; the check must fail on it")
        failures = check(copy / "mdbook" / "book", [page], whole_book=False, shot_to=None)
    expected = {
        "the broken diagram": "diagram #1",
        "the broken include": "{{#include ../../no-such-file.md}}",
        "the broken link": "no-such-chapter.html",
        "the broken image": "no-such-picture.png",
        "the console error": "console error: logged on purpose",
        "the exception": "uncaught exception: TypeError",
    }
    missed = [what for what, words in expected.items()
              if not any(p == page and words in problem for p, problem in failures)]
    if missed:
        sys.exit(f"self-test FAILED: the check did not report {', '.join(missed)} on {page}")
    print(f"self-test passed: the check failed on {page}, naming {', '.join(expected)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="pages of the built book (default: every page, and book-wide checks)")
    parser.add_argument("--no-build", action="store_true", help="check the book already built")
    parser.add_argument("--book", type=Path, default=BOOK, help=f"the built book (default {BOOK.relative_to(ROOT)})")
    parser.add_argument("--screenshot", type=Path, default=SCREENSHOT,
                        help=f"where to write the screenshot of {SCREENSHOT_PAGE} "
                             f"(default {SCREENSHOT.relative_to(ROOT)})")
    parser.add_argument("--self-test", action="store_true", help="prove the check fails on a broken copy of the book")
    args = parser.parse_args()

    started = time.monotonic()
    if args.self_test:
        self_test()
        print(f"self-test took {time.monotonic() - started:.0f} s")
        return
    if not args.no_build:
        subprocess.run(["cargo", "xtask", "book"], cwd=ROOT, check=True)
    book_dir = args.book.resolve()
    pages = args.pages or all_pages(book_dir)
    if not pages:
        sys.exit(f"no page in {book_dir}: build the book first (cargo xtask book)")
    failures = check(book_dir, pages, whole_book=not args.pages, shot_to=args.screenshot)
    print(f"{len(pages)} pages checked, {len(failures)} problem(s), in {time.monotonic() - started:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

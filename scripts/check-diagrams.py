#!/usr/bin/env python3
"""Checks that every diagram of the book is legible at the book's default width, as a reader's browser draws it.

Builds the book (`cargo xtask book`), serves it on a local port, opens each page that has a ```` ```mermaid ````
block in headless Chromium at 1280x800 (where the book's column is 750 px wide), waits for mermaid.js to draw, and prints one
line per diagram: the page, its index on the page, its rendered width against the column's, and its smallest text
in screen pixels once the SVG is scaled to fit. It fails when a diagram's smallest text is under --min-font px
(11 by default), when mermaid could not draw a diagram, or when a character has no glyph in any font the browser
has (it would draw as an empty box): text or a symbol that renders is the fix, not a font only some readers have.

    scripts/check-diagrams.py [--no-build] [--min-font PX] [--screenshots DIR] [PAGE …]

PAGE is a path in the built book (`lessons/05-offsets.html`); by default every page with a diagram. --screenshots
writes one PNG per diagram (what the reader sees, at the page's scale) for a look by eye. Needs python3 and Debian's
chromium (`apt-get install -y chromium`); it talks to Chromium over its DevTools pipe, so nothing else to install.
"""

import argparse
import base64
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools import Browser, serve

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "mdbook" / "book"
VIEWPORT = (1280, 800)

# Runs in the page: waits for every diagram, then measures each. Text sizes are the computed font size times the
# scale the SVG is drawn at on screen (its screen transform), so a wide diagram shrunk to the column reads small.
MEASURE = r"""
async (deadlineMs) => {
  const pres = () => [...document.querySelectorAll('pre.mermaid')];
  const until = Date.now() + deadlineMs;
  while (Date.now() < until && !pres().every(p => p.querySelector('svg'))) {
    await new Promise(r => setTimeout(r, 100));
  }
  await document.fonts.ready;
  const column = document.querySelector('main').getBoundingClientRect().width;

  // A character with no glyph in any font draws as the fallback font's .notdef box: the same pixels as a code point
  // no font has (U+0378 is unassigned). Compare both on a canvas, in the diagram's own font.
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const draw = (ch, font) => {
    ctx.clearRect(0, 0, 64, 64);
    ctx.font = font;
    ctx.fillStyle = '#000';
    ctx.textBaseline = 'middle';
    ctx.fillText(ch, 8, 32);
    return { w: ctx.measureText(ch).width, px: ctx.getImageData(0, 0, 64, 64).data.join(',') };
  };
  const missing = (ch, family) => {
    const font = `32px ${family}`;
    const box = draw('\u0378', font), glyph = draw(ch, font);
    return glyph.w === box.w && glyph.px === box.px;
  };

  return pres().map((pre, index) => {
    const svg = pre.querySelector('svg');
    if (!svg) return { index, error: 'mermaid drew nothing' };
    if (svg.getAttribute('aria-roledescription') === 'error') {
      return { index, error: 'mermaid could not parse it: ' + svg.textContent.trim().slice(0, 80) };
    }
    const rect = svg.getBoundingClientRect();
    let minFont = Infinity, minText = '';
    const chars = new Map();
    const walker = document.createTreeWalker(svg, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent.trim();
      const el = node.parentElement;
      if (!text || !el || el.closest('style, title, desc')) continue;
      const style = getComputedStyle(el);
      if (style.display === 'none' || style.visibility === 'hidden') continue;
      let g = el;
      while (g && !(g instanceof SVGGraphicsElement)) g = g.parentElement;
      const m = g && g.getScreenCTM();
      const scale = m ? Math.hypot(m.a, m.b) : 1;
      const px = parseFloat(style.fontSize) * scale;
      if (px < minFont) { minFont = px; minText = text; }
      for (const ch of text) if (ch.codePointAt(0) > 0x7e && !chars.has(ch)) chars.set(ch, style.fontFamily);
    }
    const tofu = [...chars].filter(([ch, family]) => missing(ch, family))
      .map(([ch]) => 'U+' + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + ' ' + ch);
    return { index, width: rect.width, height: rect.height, column, minFont: isFinite(minFont) ? minFont : null,
             minText, tofu,
             box: { x: rect.x + scrollX, y: rect.y + scrollY, width: rect.width, height: rect.height } };
  });
}
"""


def pages_with_diagrams():
    # print.html repeats every chapter, and index.html is a copy of the first one.
    return sorted(
        str(p.relative_to(BOOK)) for p in BOOK.rglob("*.html")
        if p.name not in ("print.html", "index.html") and 'class="mermaid"' in p.read_text(encoding="utf-8")
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="pages of the built book (default: every page with a diagram)")
    parser.add_argument("--no-build", action="store_true", help="check the book already in mdbook/book")
    parser.add_argument("--min-font", type=float, default=11.0, help="smallest legible text, in px (default 11)")
    parser.add_argument("--screenshots", type=Path, help="write one PNG per diagram into this directory")
    args = parser.parse_args()

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        sys.exit("chromium is not installed: apt-get update && apt-get install -y chromium")
    if not args.no_build:
        subprocess.run(["cargo", "xtask", "book"], cwd=ROOT, check=True)
    pages = args.pages or pages_with_diagrams()
    if not pages:
        sys.exit(f"no page with a diagram in {BOOK}: build the book first (cargo xtask book)")
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    profile = tempfile.mkdtemp(prefix="check-diagrams-")
    browser = server = None
    failures = 0
    count = 0
    try:
        browser = Browser(browser_path, profile)  # before the server's thread: preexec_fn and threads do not mix
        server = serve(BOOK)
        for page in pages:
            target = browser.send("Target.createTarget", url="about:blank")["targetId"]
            session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            browser.send("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0], height=VIEWPORT[1],
                         deviceScaleFactor=1, mobile=False)
            browser.send("Page.enable", session)
            browser.send("Page.navigate", session, url=f"http://127.0.0.1:{server.server_port}/{page}")
            browser.wait_event("Page.loadEventFired", session)
            result = browser.send("Runtime.evaluate", session, expression=f"({MEASURE})(20000)",
                                  awaitPromise=True, returnByValue=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"{page}: {result['exceptionDetails']}")
            diagrams = result["result"]["value"]
            if not diagrams:
                failures += 1
                print(f"FAIL {page}: the page has a mermaid block but no diagram was found")
            for d in diagrams:
                count += 1
                where = f"{page} #{d['index'] + 1}"
                if "error" in d:
                    failures += 1
                    print(f"FAIL {where}: {d['error']}")
                    continue
                problems = []
                if d["minFont"] is None:
                    d["minFont"] = float("nan")  # no text at all: nothing to read, nothing to fail
                elif d["minFont"] < args.min_font:
                    problems.append(f"text under {args.min_font:g} px")
                if d["tofu"]:
                    problems.append("no glyph for " + ", ".join(d["tofu"]))
                failures += bool(problems)
                print(f"{'FAIL' if problems else 'ok  '} {where}: {d['width']:.0f}x{d['height']:.0f} px "
                      f"({d['width'] / d['column']:.0%} of the {d['column']:.0f} px column), "
                      f"smallest text {d['minFont']:.1f} px ({d['minText'][:30]!r})"
                      + (": " + "; ".join(problems) if problems else ""))
                if args.screenshots:
                    box = d["box"]
                    shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                                        clip={**box, "scale": 1})
                    name = page.replace("/", "_").removesuffix(".html") + f"-{d['index'] + 1}.png"
                    (args.screenshots / name).write_bytes(base64.b64decode(shot["data"]))
            browser.send("Target.closeTarget", targetId=target)
    finally:
        if browser:
            browser.close()
        if server:
            server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{count} diagrams on {len(pages)} pages, {failures} illegible, in {time.monotonic() - started:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

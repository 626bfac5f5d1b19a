#!/usr/bin/env bash
# Builds the book and screenshots one page in headless Chromium, to see it as a reader does: diagrams
# rendered, code included, hint folded. Fails when Chromium writes no picture or an implausibly small one.
#
#   scripts/screenshot-book.sh [PAGE] [OUT.png]
#   PAGE defaults to lessons/01-first-event.html; OUT to target/book-screenshot.png.
#   Needs Debian's chromium (`apt-get install -y chromium`).
set -euo pipefail
cd "$(dirname "$0")/.."

page="${1:-lessons/01-first-event.html}"
out="${2:-target/book-screenshot.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  echo "chromium is not installed: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi

cargo xtask book
html="$PWD/mdbook/book/$page"
[ -f "$html" ] || { echo "no page $html in the built book" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
# --virtual-time-budget lets mermaid.js draw the diagrams before the picture is taken.
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --window-size=1280,2400 \
  --virtual-time-budget=10000 --screenshot="$out" "file://$html" 2>/dev/null

size=$(stat -c %s "$out" 2>/dev/null || echo 0)
if [ "$size" -lt 20000 ]; then
  echo "the screenshot $out is missing or nearly empty ($size bytes)" >&2
  exit 1
fi
echo "screenshot of $page: $out ($size bytes)"

"""Check the built documentation site as a reader sees it, offline (``nox -s docs`` runs it after ``mkdocs build``).

1. Always: the checked pages link no script, stylesheet, icon or image of another host (the HTML's own tags).
2. When a headless Chromium or Chrome is installed (on PATH, or a Playwright download): serves the site on
   127.0.0.1, opens the index and a formula-heavy reference page with every other host unreachable, lets
   their scripts run, saves a screenshot of each under ``out/site-check/`` and fails when raw LaTeX
   (``\\begin{``, ``\\frac``, or the ``\\[``/``\\(`` delimiters) is visible outside code blocks, when a
   formula was not typeset, or when KaTeX reported an error. Without a browser it says so and why.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index.html", "reference/adafactor/index.html")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
PLAYWRIGHT_BUILDS = ("chromium-*/chrome-linux*/chrome", "chromium_headless_shell-*/chrome-linux*/headless_shell")
RAW_LATEX = ("\\begin{", "\\frac", "\\[", "\\(")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SKIPPED = {"script", "style", "pre", "code", "template", "noscript"}
RESOURCE_ATTRS = {"script": "src", "link": "href", "img": "src", "source": "src", "iframe": "src"}


class PageText(HTMLParser):
    """What a reader sees of a page: its text outside code and typeset math, and how its formulas fared."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.visible: list[str] = []
        self.resources: list[str] = []  # what the page loads: script, stylesheet, icon, image addresses
        self.typeset: list[bool] = []  # one per formula (class arithmatex): holds KaTeX output
        self.errors = 0  # KaTeX's error marks
        self._open: list[tuple[str, bool, int | None]] = []  # (tag, hidden, the formula it opens)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        link = values.get(RESOURCE_ATTRS.get(tag, ""))
        if link and not (tag == "link" and values.get("rel") in ("canonical", "alternate")):
            self.resources.append(link)
        formula = next((f for _, _, f in reversed(self._open) if f is not None), None)
        if "katex" in classes and formula is not None:
            self.typeset[formula] = True
        self.errors += "katex-error" in classes
        if tag in VOID:
            return
        opens = None
        if "arithmatex" in classes:
            opens = len(self.typeset)
            self.typeset.append(False)
        hidden = tag in SKIPPED or "katex" in classes or bool(self._open and self._open[-1][1])
        self._open.append((tag, hidden, opens))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        if not (self._open and self._open[-1][1]) and data.strip():
            self.visible.append(data)


def read_page(html: str) -> PageText:
    page = PageText()
    page.feed(html)
    page.close()
    return page


def external(resources: Sequence[str]) -> list[str]:
    return [r for r in resources if r.startswith(("http://", "https://", "//"))]


def find_browser() -> tuple[str | None, str]:
    """The path of a headless-capable Chromium, or None and where it was looked for."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path, name
    cache = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(Path.home() / ".cache" / "ms-playwright")
    for pattern in PLAYWRIGHT_BUILDS:
        if found := sorted(glob.glob(str(Path(cache) / pattern))):
            return found[-1], "playwright"
    return None, f"none of {', '.join(BROWSERS)} on PATH, and no Playwright Chromium under {cache}"


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on a free port of 127.0.0.1 while the block runs; yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def browse(browser: str, url: str, profile: str, *extra: str) -> str:
    """Run the headless browser on ``url`` with every host but 127.0.0.1 unreachable; its stdout."""
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=10000",
        "--window-size=1280,1600",
        *(["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise SystemExit(f"check_site: {Path(browser).name} failed on {url}:\n{done.stderr[-2000:]}")
    return done.stdout


def check_rendered(browser: str, site: Path, pages: Sequence[str], shots: Path) -> list[str]:
    """Screenshot and read each page after its scripts ran; the problems found."""
    problems = []
    shots.mkdir(parents=True, exist_ok=True)
    with serve(site) as base, tempfile.TemporaryDirectory() as profile:
        for name in pages:
            url = base + name
            page = read_page(browse(browser, url, profile, "--dump-dom"))
            shot = shots / (name.replace("/index.html", "").replace("/", "_").removesuffix(".html") + ".png")
            browse(browser, url, profile, f"--screenshot={shot}")
            text = " ".join(page.visible)
            raw = [marker for marker in RAW_LATEX if marker in text]
            done = sum(page.typeset)
            print(
                f"check_site: {name}: {done}/{len(page.typeset)} formula(s) typeset, {page.errors} KaTeX "
                f"error(s), raw LaTeX visible: {', '.join(raw) or 'none'}; screenshot {shot}"
            )
            if raw:
                problems.append(f"{name}: raw LaTeX visible in the rendered text ({', '.join(raw)})")
            if done < len(page.typeset) or page.errors:
                problems.append(
                    f"{name}: {len(page.typeset) - done} untypeset formula(s), {page.errors} KaTeX error(s)"
                )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pages", nargs="*", default=PAGES, help=f"pages under the site (default: {' '.join(PAGES)})")
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site (default: site/)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "site-check", help="where the screenshots go")
    args = parser.parse_args(argv)
    problems = []
    for name in args.pages:
        path = args.site / name
        if not path.is_file():
            raise SystemExit(f"check_site: {path} does not exist (run `mkdocs build` first)")
        if outside := external(read_page(path.read_text(encoding="utf-8")).resources):
            problems.append(f"{name}: loads from other hosts: {', '.join(outside)}")
    if not problems:
        print(f"check_site: {len(args.pages)} page(s) load nothing from another host")
    browser, where = find_browser()
    if browser is None:
        print(f"check_site: screenshot check SKIPPED: no headless browser found ({where}).")
        print("check_site: to run it, install one, e.g. `apt-get install chromium`.")
    else:
        print(f"check_site: headless browser: {browser}")
        problems += check_rendered(browser, args.site.resolve(), args.pages, args.out)
    for problem in problems:
        print(f"check_site: FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

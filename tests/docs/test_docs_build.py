"""The docs site builds with warnings and broken references as errors, and links nowhere missing.

``make docs`` runs the same Sphinx command into docs/_build/html; here it builds into a
temporary folder (a fresh build, no cached environment). The site renders every notebook in
notebooks/ (not executed) and the API reference from the docstrings; a broken internal link
(a missing page, file or anchor) in any produced HTML page fails the test.
"""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_PAGES = ["index", "rtnb", "sources", "windows", "detect", "sinks", "viz", "datasets", "demo",
             "internals"]


class Page(HTMLParser):
    """The ids a page defines and the local links it makes (``a``/``link`` href, ``src``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(values[key] or "")
        url = values.get("href") if tag in ("a", "link") else values.get("src")
        if url and tag in ("a", "link", "img", "script", "iframe", "source"):
            self.links.append((tag, url))


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    html = out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
           "-d", str(out / "doctrees"), str(ROOT / "docs"), str(html)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, (
        f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return html


def test_every_notebook_and_the_api_reference_are_pages(site: Path) -> None:
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebook found"
    for name in notebooks:
        page = site / "notebooks" / f"{name}.html"
        assert page.is_file(), f"notebook {name} has no page"
        text = page.read_text(encoding="utf-8")
        assert 'class="cell' in text, f"{page.name} shows no notebook cell"
    for name in API_PAGES:
        assert (site / "api" / f"{name}.html").is_file(), f"api/{name}.html is missing"
    for name in ("index", "architecture", "changelog"):
        assert (site / f"{name}.html").is_file(), f"{name}.html is missing"
    assert "Unreleased" in (site / "changelog.html").read_text(encoding="utf-8")


def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    import rtnb
    import rtnb.detect
    import rtnb.sinks
    import rtnb.sources
    import rtnb.windows

    documented = {line.split("\t")[0] for line in inventory(site)}
    modules = {"datasets", "demo", "detect", "sinks", "sources"}
    expected = {f"rtnb.{name}" for name in rtnb.__all__}
    for module in (rtnb.sources, rtnb.detect, rtnb.windows, rtnb.sinks):
        expected |= {f"{module.__name__}.{name}" for name in module.__all__}
    missing = sorted(name for name in expected if name not in documented)
    assert not missing, f"public names without an API entry: {missing}"
    assert {f"rtnb.{m}" for m in modules} <= documented


def inventory(site: Path) -> list[str]:
    """The names of objects.inv (Sphinx's compressed inventory: 4 header lines, then zlib)."""
    import zlib

    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]
    lines = zlib.decompress(body).decode("utf-8").splitlines()
    return [line.split(" ", 1)[0] for line in lines]


def test_no_link_points_at_a_missing_page_file_or_anchor(site: Path) -> None:
    pages = {path.resolve(): parse(path) for path in site.rglob("*.html")}
    assert len(pages) > 20
    broken = []
    checked = 0
    for path, page in pages.items():
        for tag, url in page.links:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            where = f"{path.relative_to(site.resolve())}: <{tag}> {url}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
                continue
            if target.is_dir():
                target = target / "index.html"
            fragment = unquote(parts.fragment)
            if tag == "a" and fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if fragment not in ids:
                    broken.append(f"{where} (no anchor #{fragment})")
            checked += 1
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert checked > 1000, f"only {checked} local links checked"

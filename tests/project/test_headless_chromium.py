"""The headless-Chromium check the report's render test relies on catches what it claims to."""

import base64

import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.support.headless_chromium import chromium, render

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="no chromium on PATH: install Debian's chromium (apt-get install chromium)")

DOT = base64.b64encode(png_bytes((4, 4), "RGB", (200, 30, 30))).decode()
CLEAN = f"<!DOCTYPE html><html><body><h1>A clean page</h1><img alt='dot' src='data:image/png;base64,{DOT}'></body></html>"


def rendered(tmp_path, body: str):
    page = tmp_path / "page.html"
    page.write_text(body)
    return render(page, tmp_path / "page.png", tmp_path / "profile", width=400, height=300)


def test_a_clean_page_renders_with_no_errors_and_fetches_nothing(tmp_path):
    result = rendered(tmp_path, CLEAN)
    assert result.errors == []
    assert [url.split(":")[0] for url in result.requests] == ["file", "data"]
    assert "A clean page" in result.text
    image = Image.open(result.png)
    assert image.size == (400, 300)
    assert len(image.convert("RGB").getcolors(400 * 300)) > 1


@pytest.mark.parametrize("broken, caught", [
    ("<script>console.error('x')</script>", "console.error: x"),
    ("<script>undefinedFunction()</script>", "uncaught: ReferenceError: undefinedFunction is not defined"),
    ("<img alt='remote' src='http://example.invalid/x.png'>", "failed load: net::ERR_"),
    ("<img alt='missing' src='missing.png'>", "failed load: net::ERR_FILE_NOT_FOUND"),
])
def test_errors_on_the_page_are_caught(tmp_path, broken, caught):
    result = rendered(tmp_path, CLEAN.replace("</body>", broken + "</body>"))
    assert any(error.startswith(caught) for error in result.errors), result.errors

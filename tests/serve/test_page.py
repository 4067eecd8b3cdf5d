"""The web page of `estella serve` in a real browser: Debian's chromium, headless, driven by Playwright.

One server (a real `estella serve` of a real export, on a free port of 127.0.0.1, with an API key)
and one page: the key is asked for, the text streams in chunk by chunk, Stop ends a stream, a bad
prime shows the server's message. A screenshot of the page goes to the test's temp folder.
"""

import os
import shutil

import pytest

from estella.serve.process import ServerProcess

CHROMIUM = os.environ.get("ESTELLA_CHROMIUM", "/usr/bin/chromium")
KEY = "page-test-key"
PRIME = "It was"

# Records the length of the generated text at every change, so the test can see it grow chunk by chunk.
WATCH_OUTPUT = """() => {
  window.lengths = [];
  new MutationObserver(() => window.lengths.push(document.getElementById("output").textContent.length))
    .observe(document.getElementById("output"), {characterData: true, childList: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def server(real_export):
    with ServerProcess(real_export, "--api-key", KEY, "--shutdown-timeout", "5") as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: run `make browser` (apt-get install chromium) or set ESTELLA_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def test_page_streams_text_stops_and_shows_errors(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 820})
    script_errors, requested = [], []
    page.on("pageerror", lambda e: script_errors.append(str(e)))
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.url + "/")
    assert page.title() == "estella"

    page.get_by_label("Prime").fill(PRIME)
    page.get_by_label("Temperature").fill("0.8")
    page.get_by_label("Top-p").fill("0.95")
    page.get_by_label("Length").fill("3000")
    generate = page.get_by_role("button", name="Generate")

    # Without the key the server answers 401, and the page shows its message.
    generate.click()
    page.wait_for_function("document.getElementById('status').textContent === 'Failed.'")
    assert page.inner_text("#error").startswith("401: a valid API key is needed")

    page.get_by_text("More settings").click()
    page.get_by_label("API key").fill(KEY)
    page.evaluate(WATCH_OUTPUT)
    generate.click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=60_000)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#model-info").startswith("Model: ")  # /v1/models answered once the key was there
    text = page.text_content("#output")
    assert text.startswith(PRIME) and len(text) == len(PRIME) + 3000, (len(text), text[:80])
    generated = [n - len(PRIME) for n in page.evaluate("window.lengths") if n > len(PRIME)]
    # Streamed: the text arrived in several growing pieces, not all at the end.
    assert len(generated) >= 2 and generated == sorted(generated) and generated[-1] == 3000, generated
    assert page.inner_text("#chars") == "3,000"
    assert page.inner_text("#speed").endswith("chars/s")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    # Stop: abort the stream as soon as its first characters are on the page.
    page.evaluate("""() => {
      const output = document.getElementById("output");
      new MutationObserver((_, observer) => {
        if (output.textContent.length > output.firstChild.textContent.length) {
          observer.disconnect();
          document.getElementById("stop").click();
        }
      }).observe(output, {characterData: true, childList: true, subtree: true});
    }""")
    generate.click()
    page.wait_for_function("document.getElementById('status').textContent === 'Stopped.'", timeout=60_000)
    stopped = page.text_content("#output")
    assert stopped.startswith(PRIME) and len(PRIME) < len(stopped) < len(PRIME) + 3000
    assert page.get_by_role("button", name="Generate").is_enabled()

    # A prime with a character outside the vocabulary: the server's 400 message, as the CLI words it.
    page.get_by_label("Prime").fill("snow \u2603 man")
    generate.click()
    page.wait_for_function("document.getElementById('status').textContent === 'Failed.'")
    error = page.inner_text("#error")
    assert error.startswith("400: ") and "\u2603" in error, error
    assert script_errors == []
    # One file, nothing from elsewhere (no CDN): every request goes to the server itself.
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested
    page.close()

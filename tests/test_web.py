"""The clinician page end to end: the real API served by uvicorn over a small index (tiny
encoder), driven in headless Chromium. A chest X-ray DICOM is uploaded, a Chinese report comes
back whose citations point at cards in the case grid, thumbnails load, API errors are shown,
the API key prompt works, and a screenshot lands in runs/screenshots/."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from rag import pipeline
from rag.service.app import Settings, create_app
from tests.fixtures.tiny_corpus import make_corpus

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (Debian), and pip install selenium"
SCREENSHOT = REPO / "runs" / "screenshots" / "web-ask-zh.png"
WAIT_S = 30

webdriver = pytest.importorskip("selenium.webdriver", reason=f"needs selenium: {INSTALL}")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@contextmanager
def serve(app):
    """The app on a free 127.0.0.1 port, in a background thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def corpus_and_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    corpus = make_corpus(root / "corpus")
    pipeline.index(corpus, root / "index", encoder="tiny")
    return corpus, root / "index"


@pytest.fixture(scope="module")
def base_url(corpus_and_index):
    with serve(create_app(Settings(index=corpus_and_index[1]))) as url:
        yield url


@pytest.fixture(scope="module")
def driver():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1100", "--lang=en-US"):
        options.add_argument(flag)
    # an explicit driver path: Selenium Manager never tries to download one
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)),
                               options=options)
    browser.set_page_load_timeout(WAIT_S)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def chest_xray(corpus_and_index):
    """A real chest CR DICOM from pydicom-data, else a PNG of the test corpus."""
    try:
        from pydicom.data import get_testdata_file

        found = get_testdata_file("RG1_UNCI.dcm")
    except Exception:  # pydicom-data missing, or a pydicom without it
        found = None
    return Path(found) if found else corpus_and_index[0] / "img" / "c0_0.png"


def ask(driver, base_url, path: Path, lang="zh"):
    driver.get(base_url + "/")
    driver.find_element(By.ID, "file").send_keys(str(path))
    Select(driver.find_element(By.ID, "lang")).select_by_value(lang)
    driver.find_element(By.ID, "submit").click()


def wait_for_report(driver):
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#report .sentence")
               or d.find_element(By.ID, "error").is_displayed())
    assert not driver.find_element(By.ID, "error").is_displayed(), \
        driver.find_element(By.ID, "error").text
    # thumbnails load after the report is drawn (with an API key: fetched, then given a src)
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#cases img.thumb')]"
        ".every(i => (i.getAttribute('src') && i.complete) || i.classList.contains('broken'))"))


def loaded_thumbnails(driver) -> list[int]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#cases img.thumb')].map(i => i.naturalWidth)")


def test_dicom_upload_gives_a_chinese_report_whose_citations_point_at_cases(
        driver, base_url, chest_xray):
    ask(driver, base_url, chest_xray, lang="zh")
    wait_for_report(driver)

    headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#report h3")]
    assert "所见" in headings, headings
    assert driver.find_elements(By.CSS_SELECTOR, "#report .sentence")
    cites = driver.find_elements(By.CSS_SELECTOR, "#report .cite[data-n]")
    assert cites, driver.find_element(By.ID, "report").text
    cards = {c.get_attribute("data-n"): c for c in driver.find_elements(By.CSS_SELECTOR, ".case[data-n]")}
    assert {c.get_attribute("data-n") for c in cites} <= set(cards)
    assert all(c.text == f"[{c.get_attribute('data-n')}]" for c in cites)

    first, last = cites[0], cites[-1]
    ActionChains(driver).move_to_element(first).perform()
    assert "highlight" in cards[first.get_attribute("data-n")].get_attribute("class")
    last.click()
    highlighted = driver.find_elements(By.CSS_SELECTOR, ".case.highlight")
    assert [c.get_attribute("data-n") for c in highlighted] == [last.get_attribute("data-n")]

    widths = loaded_thumbnails(driver)
    assert widths and all(w > 0 for w in widths), widths
    scores = [c.find_element(By.CSS_SELECTOR, ".score").text for c in cards.values()]
    assert all(s.startswith("score ") and len(s.split(".")[-1]) == 3 for s in scores), scores
    assert all(c.find_element(By.CSS_SELECTOR, ".excerpt").text for c in cards.values())
    assert not driver.find_element(By.ID, "error").is_displayed()


def test_screenshot_of_the_rendered_page_is_not_blank(driver, base_url, chest_xray):
    ask(driver, base_url, chest_xray, lang="zh")
    wait_for_report(driver)
    driver.execute_script("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    with Image.open(SCREENSHOT) as shot:
        assert shot.width >= 800 and shot.height >= 600, shot.size
        assert np.asarray(shot.convert("L"), dtype=np.float32).std() > 10


def test_a_dropped_png_is_previewed_and_answered_in_english(driver, base_url, corpus_and_index):
    png = (corpus_and_index[0] / "img" / "c1_0.png").read_bytes()
    driver.get(base_url + "/")
    driver.execute_script(
        "const file = new File([new Uint8Array(arguments[0])], 'c1_0.png', {type: 'image/png'});"
        "const data = new DataTransfer(); data.items.add(file);"
        "document.getElementById('dropzone')"
        ".dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));", list(png))
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: d.execute_script("return document.getElementById('preview-img').naturalWidth"))
    assert "c1_0.png" in driver.find_element(By.ID, "preview-name").text
    driver.find_element(By.ID, "submit").click()  # English is the default
    wait_for_report(driver)
    headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#report h3")]
    assert "Findings" in headings and "所见" not in headings


def test_a_file_that_is_not_an_image_shows_the_api_error(driver, base_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all")
    ask(driver, base_url, notes, lang="en")
    error = WebDriverWait(driver, WAIT_S).until(ec.visibility_of_element_located((By.ID, "error")))
    assert "cannot read the uploaded image" in error.text
    assert not driver.find_elements(By.CSS_SELECTOR, "#report .sentence")


def test_a_guarded_server_asks_for_the_api_key_and_then_answers(driver, corpus_and_index):
    corpus, index_dir = corpus_and_index
    with serve(create_app(Settings(index=index_dir, api_key="s3cret"))) as url:
        ask(driver, url, corpus / "img" / "c1_0.png", lang="en")
        key = WebDriverWait(driver, WAIT_S).until(ec.visibility_of_element_located((By.ID, "api-key")))
        assert "API key" in driver.find_element(By.ID, "error").text
        key.send_keys("s3cret")
        driver.find_element(By.ID, "submit").click()
        wait_for_report(driver)
        assert "Findings" in [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#report h3")]
        widths = loaded_thumbnails(driver)  # fetched with the key, shown as blobs
        assert widths and all(w > 0 for w in widths), widths


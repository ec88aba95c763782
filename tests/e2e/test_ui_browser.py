"""The clinician UI in a real headless Chromium (Debian's, driven by Selenium) on loopback:
upload, prediction and Grad-CAM overlay, a corrected diagnosis, and that correction in the
next retraining run's data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dermaops.data.ingest import IngestSettings, ingest
from dermaops.net import free_port, wait_until_ready
from dermaops.serving.process import predictor_process
from dermaops.serving.smoke import lesion_jpeg
from dermaops.settings import Home
from tests.e2e.conftest import DERMAOPS
from tests.k8s.conftest import find_tool
from tests.processes import start

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
WAIT = 90  # seconds for the page to show what it should


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = find_tool("chromium"), find_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    flags = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
             "--window-size=1400,2000", f"--user-data-dir={tmp_path / 'chromium'}"]  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    web = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield web
    finally:
        web.quit()


def _ui(stack: ExitStack, predictor: str, store: Path, tmp_path: Path, env: dict[str, str]) -> str:
    port = free_port()
    command = [str(DERMAOPS), "ui", "--port", str(port), "--predictor-url", predictor,
               "--feedback-dir", str(store)]  # fmt: skip
    process = start(stack, command, tmp_path / f"ui-{port}.log", env)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/_stcore/health", 60, process, tmp_path / f"ui-{port}.log")
    return url


def _wait_for_text(web: Any, text: str, seconds: float = WAIT) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(web, seconds).until(lambda d: text in d.find_element("tag name", "body").text)


def test_upload_predict_explain_correct_and_retrain_with_it(
    browser: Any, served_model: Path, synth_raw: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    web = browser
    env = os.environ | {"DERMAOPS_HOME": str(tmp_path / "home")}
    image = tmp_path / "lesion.jpg"
    image.write_bytes(lesion_jpeg(seed=3))
    store = tmp_path / "home" / "feedback"
    with ExitStack() as stack:
        predictor_url = stack.enter_context(
            predictor_process(served_model, tmp_path / "home", tmp_path / "predictor.log")
        )
        ui = _ui(stack, predictor_url, store, tmp_path, env)

        web.get(ui)
        _wait_for_text(web, "A dermoscopic image")
        web.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(image))
        _wait_for_text(web, "Most likely:")
        _wait_for_text(web, "Grad-CAM for")
        body = web.find_element(By.TAG_NAME, "body").text
        assert "melanoma flag" in body.lower() and "Model dermaops, version" in body
        assert "Decision support only" in body
        square, cam = web.find_elements(By.CSS_SELECTOR, "[data-testid=stImage] img")
        assert square.size == cam.size and square.size["width"] == square.size["height"] > 200, (
            "the upload's square and its Grad-CAM side by side, at one size"
        )

        web.find_element(By.XPATH, "//label[.//p[text()='Melanoma (mel)']]").click()
        name = web.find_element(By.CSS_SELECTOR, "input[type=text]")
        name.send_keys("Dr Test")
        web.find_element(By.XPATH, "//button[.//p[text()='Send feedback']]").click()
        _wait_for_text(web, "Feedback saved")
        shot = tmp_path / "ui.png"
        web.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        kept = Path(os.environ.get("DERMAOPS_TEST_ARTIFACTS", tmp_path)) / "ui-screenshot.png"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, kept)

        # The same image again: one row, updated, not a duplicate.
        web.find_element(By.XPATH, "//label[.//p[text()='Basal cell carcinoma (bcc)']]").click()
        web.find_element(By.XPATH, "//button[.//p[text()='Send feedback']]").click()
        _wait_for_text(web, "Feedback updated")

    from tests.log_scan import assert_no_image_data

    assert_no_image_data(sorted(tmp_path.glob("*.log")))
    rows = pd.read_csv(store / "feedback.csv")
    assert len(rows) == 1 and rows.loc[0, "dx"] == "bcc" and rows.loc[0, "clinician"] == "Dr Test"
    feedback_id = rows.loc[0, "feedback_id"]
    raw = tmp_path / "raw"
    ingest(raw, IngestSettings(source="path", path=str(synth_raw), feedback=str(store)),
           Home(tmp_path / "home"))  # fmt: skip
    merged = pd.read_csv(raw / "HAM10000_metadata.csv").set_index("image_id")
    assert merged.loc[f"FB_{feedback_id}", "dx"] == "bcc", "the correction is in the next data"


def test_an_unreachable_predictor_is_reported_and_the_upload_kept(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    web = browser
    image = tmp_path / "lesion.jpg"
    image.write_bytes(lesion_jpeg(seed=4))
    env = os.environ | {"DERMAOPS_HOME": str(tmp_path / "home")}
    with ExitStack() as stack:
        ui = _ui(stack, f"http://127.0.0.1:{free_port()}", tmp_path / "fb", tmp_path, env)
        web.get(ui)
        _wait_for_text(web, "A dermoscopic image")
        web.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(image))
        _wait_for_text(web, "cannot be reached")
        body = web.find_element(By.TAG_NAME, "body").text
        assert "Your image is kept" in body and "lesion.jpg" in body and "Retry" in body


def test_uploads_over_the_predictors_limit_are_refused_and_no_deploy_button(
    browser: Any, tmp_path: Path
) -> None:
    """The page takes what the predictor takes (its DERMAOPS_SERVING_MAX_IMAGE_BYTES, here 2 MiB,
    as the chart gives it), says so, and refuses a bigger file; a clinical page has no
    developer toolbar."""
    from selenium.webdriver.common.by import By

    web = browser
    big = tmp_path / "big.jpg"
    big.write_bytes(lesion_jpeg(seed=5) + os.urandom(3 * 2**20))
    env = os.environ | {"DERMAOPS_HOME": str(tmp_path / "home"),
                        "DERMAOPS_UI_MAX_IMAGE_BYTES": str(2 * 2**20)}  # fmt: skip
    with ExitStack() as stack:
        ui = _ui(stack, f"http://127.0.0.1:{free_port()}", tmp_path / "fb", tmp_path, env)
        web.get(ui)
        _wait_for_text(web, "2MB per file")
        assert "Deploy" not in web.find_element(By.TAG_NAME, "body").text
        assert not web.find_elements(By.CSS_SELECTOR, "[data-testid=stAppDeployButton]")
        web.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(big))
        _wait_for_text(web, "File must be 2.0MB or smaller")
        assert "cannot be reached" not in web.find_element(By.TAG_NAME, "body").text


def test_stopping_the_ui_stops_its_server(tmp_path: Path) -> None:
    """`dermaops ui` becomes Streamlit: stopping the process it started leaves no server behind."""
    import httpx

    env = os.environ | {"DERMAOPS_HOME": str(tmp_path / "home")}
    with ExitStack() as stack:
        url = _ui(stack, "http://127.0.0.1:9", tmp_path / "feedback", tmp_path, env)
        assert httpx.get(f"{url}/_stcore/health", timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_stcore/health", timeout=10)

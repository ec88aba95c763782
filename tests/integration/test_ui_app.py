"""The clinician page under Streamlit's own test harness (AppTest), against a real predictor."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dermaops.data.ood import ood_images
from dermaops.net import free_port
from dermaops.serving.process import predictor_process
from dermaops.serving.smoke import lesion_jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


@pytest.fixture(scope="module")
def predictor(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("ui-predictor")
    with predictor_process(served_model, root / "home", root / "predictor.log") as url:
        yield url


def _app(monkeypatch: pytest.MonkeyPatch, url: str, store: Path) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.setenv("DERMAOPS_UI_PREDICTOR_URL", url)
    monkeypatch.setenv("DERMAOPS_UI_FEEDBACK_DIR", str(store))
    return AppTest.from_file(str(APP), default_timeout=60)


def _upload(at: AppTest, seed: int) -> AppTest:
    at.run()
    assert not at.exception and at.info[0].value.startswith("Decision support only")
    at.file_uploader[0].set_value(("lesion.jpg", lesion_jpeg(seed), "image/jpeg"))
    return at.run()


def test_answer_operating_point_and_feedback(
    predictor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _upload(_app(monkeypatch, predictor, tmp_path / "store"), seed=5)
    assert not at.exception, at.exception
    assert any(m.value.startswith("**Most likely:") for m in at.markdown)
    flag = [*at.success, *at.error][0].value
    assert "melanoma flag" in flag.lower() and "threshold" in flag
    assert at.caption and "Model dermaops, version" in at.caption[-1].value
    at.radio[0].set_value("vasc")
    at.text_input[0].input("Dr AppTest")
    at.button(key="FormSubmitter:feedback-Send feedback").click()
    at.run()
    assert "Feedback saved" in at.success[-1].value
    rows = pd.read_csv(tmp_path / "store" / "feedback.csv")
    assert rows[["dx", "clinician"]].values.tolist() == [["vasc", "Dr AppTest"]]
    assert rows.loc[0, "model_version"] == "local" and rows.loc[0, "predicted_dx"] in set(
        ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    )


def test_a_feedback_without_a_name_is_refused(
    predictor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _upload(_app(monkeypatch, predictor, tmp_path / "store"), seed=6)
    at.button(key="FormSubmitter:feedback-Send feedback").click()
    at.run()
    assert "Feedback not saved" in at.error[-1].value and "clinician" in at.error[-1].value
    assert not (tmp_path / "store" / "feedback.csv").exists()


def test_a_dead_predictor_is_reported_and_the_upload_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _upload(_app(monkeypatch, f"http://127.0.0.1:{free_port()}", tmp_path), seed=7)
    assert "cannot be reached" in at.error[0].value and "Your image is kept" in at.error[0].value
    assert at.file_uploader[0].value is not None, "the upload stays for a retry"


def test_with_signin_required_no_proxy_user_means_no_feedback_form(
    predictor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERMAOPS_UI_REQUIRE_SIGNIN", "true")
    at = _upload(_app(monkeypatch, predictor, tmp_path / "store"), seed=8)
    assert any(m.value.startswith("**Most likely:") for m in at.markdown), "answers still shown"
    assert "needs a signed-in user" in at.warning[0].value
    assert not at.radio and not at.text_input, "no way to send feedback anonymously"


def test_an_image_the_guard_refuses_gets_a_warning_and_the_answer_only_on_request(
    predictor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (screenshot,) = ood_images("text_screenshot", 1, seed=4)
    buf = io.BytesIO()
    screenshot.save(buf, "PNG")
    at = _app(monkeypatch, predictor, tmp_path / "store")
    at.run()
    at.file_uploader[0].set_value(("screen.png", buf.getvalue(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert "does not look like the dermoscopic images" in at.warning[0].value
    assert not any(m.value.startswith("**Most likely:") for m in at.markdown), "no diagnosis"
    assert not at.radio, "no feedback form on an answer not shown"
    assert "Model dermaops, version" in at.caption[-1].value
    at.toggle[0].set_value(True)
    at.run()
    assert any(m.value.startswith("**Most likely:") for m in at.markdown), "shown on request"
    assert at.warning and at.radio

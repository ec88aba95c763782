"""The clinician page. Run by ``dermaops ui`` (``streamlit run app.py -- --predictor-url URL``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from dermaops.data.feedback import record_feedback
from dermaops.errors import DermaOpsError
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.ui.client import DISCLAIMER, PredictorError, classify, operating_point, signed_in_user


def _arguments() -> argparse.Namespace:
    """From ``streamlit run app.py -- --predictor-url ...``, else DERMAOPS_UI_* variables."""
    env = os.environ.get
    parser = argparse.ArgumentParser()
    parser.add_argument("--predictor-url", default=env("DERMAOPS_UI_PREDICTOR_URL"))
    parser.add_argument("--model-name", default=env("DERMAOPS_UI_MODEL_NAME", "dermaops"))
    parser.add_argument("--feedback-dir", default=env("DERMAOPS_UI_FEEDBACK_DIR"))
    parser.add_argument(
        "--require-signin", action="store_true",
        default=env("DERMAOPS_UI_REQUIRE_SIGNIN", "").lower() in ("1", "true", "yes"),
    )  # fmt: skip
    parsed, _ = parser.parse_known_args(sys.argv[1:])
    if not parsed.predictor_url or not parsed.feedback_dir:
        parser.error("--predictor-url and --feedback-dir are required (or DERMAOPS_UI_*)")
    return parsed


args = _arguments()
st.set_page_config(page_title="DermaOps", layout="wide")
st.title("DermaOps: dermoscopy decision support")
st.info(DISCLAIMER)

upload = st.file_uploader("A dermoscopic image (JPEG or PNG)", type=["jpg", "jpeg", "png"])
if upload is None:
    st.stop()
image = upload.getvalue()
key = hashlib.sha256(image).hexdigest()
if st.session_state.get("image_key") != key or st.button("Retry"):
    st.session_state.pop("answer", None)
    st.session_state["image_key"] = key
    try:
        with st.spinner("Asking the model..."):
            st.session_state["answer"] = classify(args.predictor_url, image, args.model_name)
    except PredictorError as e:
        st.error(f"{e}. Your image is kept: press Retry.")
        st.button("Retry", key="retry-after-error")
        st.stop()
answer = st.session_state["answer"]

left, right = st.columns(2)
with left:
    st.subheader("What the model sees")
    top_code, top_name, top_p = answer.top[0]
    st.markdown(f"**Most likely: {top_name} ({top_code}), {top_p:.0%}**")
    if answer.melanoma_flag:
        st.error(operating_point(answer))
    else:
        st.success(operating_point(answer))
    chart = pd.DataFrame(
        {"probability": [answer.probabilities[c] for c in CLASSES]},
        index=[f"{FULL_NAMES[c]} ({c})" for c in CLASSES],
    )
    st.bar_chart(chart, horizontal=True)
    st.table(pd.DataFrame([{"diagnosis": f"{name} ({code})", "probability": f"{p:.1%}"}
                           for code, name, p in answer.top]))  # fmt: skip
with right:
    st.subheader("Where it looked")
    if answer.overlay_png:
        st.image(answer.overlay_png, caption=f"Grad-CAM for {FULL_NAMES[answer.explained]}")
    st.image(image, caption="The uploaded image")
st.caption(f"Model {answer.model_name}, version {answer.model_version}")

st.subheader("Your diagnosis")
proxy_user = signed_in_user(st.context.headers)
if args.require_signin and not proxy_user:
    st.warning("Feedback needs a signed-in user, and no sign-in proxy named one for this page.")
    st.stop()
with st.form("feedback"):
    dx = st.radio(
        "Confirm or correct", CLASSES, index=CLASSES.index(answer.top[0][0]),
        format_func=lambda c: f"{FULL_NAMES[c]} ({c})",
    )  # fmt: skip
    clinician = proxy_user or st.text_input("Your name (no sign-in proxy in front of this page)")
    sent = st.form_submit_button("Send feedback")
if sent:
    try:
        recorded = record_feedback(Path(args.feedback_dir), image, dx, clinician or "",
                                   answer.model_version, answer.top[0][0])  # fmt: skip
    except (ValueError, DermaOpsError) as e:
        st.error(f"Feedback not saved: {e}")
    else:
        verb = "saved" if recorded.created else "updated"
        st.success(f"Feedback {verb} ({recorded.feedback_id}): {FULL_NAMES[dx]}, by {clinician}. "
                   "It joins the next retraining run's data.")  # fmt: skip

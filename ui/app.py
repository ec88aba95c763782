"""The clinician page. Run by ``dermaops ui`` (``streamlit run app.py -- --predictor-url URL``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dermaops.client import PredictorError
from dermaops.data.feedback import record_feedback
from dermaops.errors import DermaOpsError
from dermaops.imaging import ImageLimits
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.ui.client import (
    DISCLAIMER,
    classify,
    grad_cam_views,
    guard_warning,
    operating_point,
    signed_in_user,
    too_large,
    upload_limit_mb,
)
from dermaops.v1 import ProtocolError


def _arguments() -> argparse.Namespace:
    """From ``streamlit run app.py -- --predictor-url ...``, else DERMAOPS_UI_* variables."""
    env = os.environ.get
    parser = argparse.ArgumentParser()
    parser.add_argument("--predictor-url", default=env("DERMAOPS_UI_PREDICTOR_URL"))
    parser.add_argument("--model-name", default=env("DERMAOPS_UI_MODEL_NAME", "dermaops"))
    parser.add_argument("--feedback-dir", default=env("DERMAOPS_UI_FEEDBACK_DIR"))
    parser.add_argument(  # the predictor's DERMAOPS_SERVING_MAX_IMAGE_BYTES
        "--max-image-bytes", type=int,
        default=int(env("DERMAOPS_UI_MAX_IMAGE_BYTES", ImageLimits.max_bytes)),
    )  # fmt: skip
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

upload = st.file_uploader(
    "A dermoscopic image (JPEG or PNG)", type=["jpg", "jpeg", "png"],
    max_upload_size=upload_limit_mb(args.max_image_bytes),
)  # fmt: skip
if upload is None:
    st.stop()
image = upload.getvalue()
if refusal := too_large(image, args.max_image_bytes):
    st.error(refusal)
    st.stop()
key = hashlib.sha256(image).hexdigest()
if st.session_state.get("image_key") != key or st.button("Retry"):
    st.session_state.pop("answer", None)
    st.session_state["image_key"] = key
    try:
        with st.spinner("Asking the model..."):
            st.session_state["answer"] = classify(args.predictor_url, image, args.model_name)
    except (PredictorError, ProtocolError) as e:
        st.error(f"{e}. Your image is kept: press Retry.")
        st.button("Retry", key="retry-after-error")
        st.stop()
answer = st.session_state["answer"]
model_caption = f"Model {answer.model_name}, version {answer.model_version}"
if warning := guard_warning(answer):  # the guard tripped: no diagnosis unless asked for
    st.warning(warning)
    if not st.toggle("Show the model's answer anyway"):
        st.caption(model_caption)
        st.stop()

left, right = st.columns([2, 3])
with left:
    st.subheader("What the model says")
    top_code, top_name, top_p = answer.top[0]
    st.markdown(f"**Most likely: {top_name} ({top_code}), {top_p:.0%}**")
    if answer.melanoma_flag:
        st.error(operating_point(answer))
    else:
        st.success(operating_point(answer))
    shares = pd.DataFrame({"diagnosis": [f"{FULL_NAMES[c]} ({c})" for c in CLASSES],
                           "probability": [answer.probabilities[c] for c in CLASSES]})  # fmt: skip
    bars = alt.Chart(shares).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("diagnosis:N", sort=None, title=None, axis=alt.Axis(labelLimit=0)),  # in full
    )  # fmt: skip
    st.altair_chart(bars)
    st.table(pd.DataFrame([{"diagnosis": f"{name} ({code})", "probability": f"{p:.1%}"}
                           for code, name, p in answer.top]))  # fmt: skip
with right:
    st.subheader("Where it looked")
    views = grad_cam_views(image, answer, limits=ImageLimits(max_bytes=args.max_image_bytes))
    if views is None:
        st.image(image, caption="Your image (this model gives no Grad-CAM)")
    else:
        seen, cam = views
        mine, theirs = st.columns(2)
        mine.image(seen, caption="Your image: the square the model sees", width="stretch")
        theirs.image(cam, caption=f"Grad-CAM for {FULL_NAMES[answer.explained]}", width="stretch")
st.caption(model_caption)

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
                                   answer.model_version, answer.top[0][0],
                                   melanoma_flag=answer.melanoma_flag)  # fmt: skip
    except (ValueError, DermaOpsError) as e:
        st.error(f"Feedback not saved: {e}")
    else:
        verb = "saved" if recorded.created else "updated"
        st.success(f"Feedback {verb} ({recorded.feedback_id}): {FULL_NAMES[dx]}, by {clinician}. "
                   "It joins the next retraining run's data.")  # fmt: skip

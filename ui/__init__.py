"""The clinician UI (``dermaops ui``): upload, prediction, Grad-CAM, feedback. Streamlit."""

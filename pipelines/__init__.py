"""dermaops.pipelines: the training and retraining pipelines, and compiling them.

``compiled/`` holds the IR YAML the KFP UI uploads; a snapshot test keeps it current.
"""

from dermaops.pipelines.settings import PipelineSettings
from dermaops.pipelines.training import build_pipeline, compile_all

__all__ = ["PipelineSettings", "build_pipeline", "compile_all"]

"""The ``dermaops`` command line: one module per command group, each reaching one layer lazily.

``data`` (data, feedback, bench prepare), ``train`` (train, baseline, evaluate, gate, bench
train), ``pipeline`` (kfp), ``registry`` (registry, deploy: MLflow and the cluster),
``rollout``, ``serving`` (serve, predict, traffic, ui, monitor, bench serve: KServe and
Evidently); ``app`` puts them together.
"""

from dermaops.cli.app import app, main

__all__ = ["app", "main"]

"""The ``dermaops`` command line: one module per command group, each reaching one layer lazily.

``data`` (data, feedback, bench prepare), ``train`` (train, baseline, evaluate, gate, bench
train), ``platform`` (pipeline, registry, deploy: kfp and MLflow), ``serving`` (serve, predict,
traffic, ui, monitor, bench serve: KServe and Evidently); ``app`` puts them together.
"""

from dermaops.cli.app import app, main

__all__ = ["app", "main"]

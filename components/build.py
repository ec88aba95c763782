"""Turn the stage functions into KFP components that run in one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from dermaops.components.baseline import baseline
from dermaops.components.deploy import deploy
from dermaops.components.evaluate import evaluate
from dermaops.components.gate import gate
from dermaops.components.ingest import ingest
from dermaops.components.notify import notify
from dermaops.components.prepare import prepare
from dermaops.components.promote import promote
from dermaops.components.register import register
from dermaops.components.train import train
from dermaops.deploy import TRAINER_IMAGE


@dataclass(frozen=True)
class Components:
    """Every stage as a component of one image."""

    ingest: PythonComponent
    prepare: PythonComponent
    baseline: PythonComponent
    train: PythonComponent
    evaluate: PythonComponent
    gate: PythonComponent
    register: PythonComponent
    promote: PythonComponent
    deploy: PythonComponent
    notify: PythonComponent


def build(image: str = TRAINER_IMAGE) -> Components:
    """Components whose tasks run ``image`` (it has dermaops and kfp installed)."""

    def component(func: Any) -> PythonComponent:
        made: PythonComponent = dsl.component(func, base_image=image, install_kfp_package=False)
        return made

    stages = (ingest, prepare, baseline, train, evaluate, gate, register, promote, deploy, notify)
    return Components(*(component(f) for f in stages))

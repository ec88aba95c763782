"""Rollouts: a new champion reaches clinicians in stages, judged by what the model answers.

``plan`` is the state machine and its file, ``judge`` the checks of a stage; both pure. The
registry's driver (:mod:`dermaops.registry.rollout`) moves traffic and the champion alias.
"""

from typing import TYPE_CHECKING

from dermaops._lazy import attach

if TYPE_CHECKING:
    from dermaops.rollout.judge import Check as Check
    from dermaops.rollout.judge import Judgement as Judgement
    from dermaops.rollout.judge import JudgeSettings as JudgeSettings
    from dermaops.rollout.plan import Rollout as Rollout
    from dermaops.rollout.plan import RolloutError as RolloutError
    from dermaops.rollout.plan import RolloutSettings as RolloutSettings
    from dermaops.rollout.plan import RolloutStore as RolloutStore

__getattr__, __dir__, __all__ = attach(__name__, __file__)

"""Training: the two-phase fine-tune of the earlier system, made fast, resumable and exact.

Also the Random Forest baseline every network must beat, and ``dermaops bench train``.
"""

from typing import TYPE_CHECKING

from dermaops._lazy import attach

if TYPE_CHECKING:
    from dermaops.train.augment import AugmentSettings as AugmentSettings
    from dermaops.train.baseline import run_baseline as run_baseline
    from dermaops.train.bench import bench_train as bench_train
    from dermaops.train.loop import TrainResult as TrainResult
    from dermaops.train.loop import plan_phases as plan_phases
    from dermaops.train.loop import train as train
    from dermaops.train.settings import TrainSettings as TrainSettings

__getattr__, __dir__, __all__ = attach(__name__, __file__)

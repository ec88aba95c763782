"""Each model version's calibration source: the class shares of the images its probabilities
were calibrated under, its class bias and the validation probabilities that bias was fitted on,
read from the model's folder (:func:`calibration_source`) and kept per version
(:class:`Sources`) for the estimates of its answers: the monitor's, and the rollout judge's,
which estimates both versions."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dermaops.data.features import STAT_NAMES
from dermaops.errors import DermaOpsError
from dermaops.evaluation.calibration import BIAS_MIN_IMAGES, apply_bias, fit_class_bias
from dermaops.inference_log import PROBABILITY_FIELDS
from dermaops.labels import CLASSES
from dermaops.model.artifact import CALIBRATION, CLASS_BIAS, REFERENCE
from dermaops.model.uri import resolve_model
from dermaops.settings import Home

log = logging.getLogger(__name__)

REFETCH_S = 600.0  # seconds before a version whose model could not be fetched is retried


# The image statistics that say whether the images changed beyond their class mix (their
# sizes are left out: an upload path that resizes changes them, not what the model sees).
INPUTS = tuple(name for name in STAT_NAMES if name not in ("width", "height", "aspect"))


class EstimateSourceError(DermaOpsError):
    """No priors for an estimate: the reference has no labels, or its model no calibration."""


class UncalibratedModelError(EstimateSourceError):
    """The model's probabilities were never calibrated: no estimate can be read from them."""


@dataclass(frozen=True)
class Validation:
    """The validation images' calibrated probabilities (N x 7, before the class bias) and
    classes (indices): what the class bias was fitted on."""

    probs: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class Source:
    """What a model's probabilities were calibrated under: the class shares of its train and
    validation images, the class bias that calibrates each class (None: not fitted), those
    images' classes (indices) and statistics (:data:`INPUTS`; None: the reference has none),
    and the validation probabilities the bias was fitted on (None: registered without them)."""

    priors: np.ndarray
    bias: np.ndarray | None = None
    classes: np.ndarray | None = None
    inputs: np.ndarray | None = None
    validation: Validation | None = None
    _shifts: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def floored_priors(self) -> np.ndarray:
        """The priors with no class at 0 (a class the data never showed would be impossible in
        every window), summing to 1: what the probabilities are re-weighted from."""
        priors = np.clip(np.asarray(self.priors, dtype=float), 1e-6, None)
        floored: np.ndarray = priors / priors.sum()
        return floored

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        """Served probabilities calibrated per class: the class bias applied (as they are
        where none was fitted). What an estimate reads labels from, before any re-weighting."""
        return probs if self.bias is None else apply_bias(probs, self.bias)

    def bias_shifts(self, draws: int) -> np.ndarray | None:
        """How the class bias moves when validation is resampled: per draw, the bias fitted on
        a bootstrap resample of the validation rows less the bias fitted on all of them
        (draws x 7); None without validation probabilities. Fitted once per source and count
        (a source is cached per version), with a fixed seed, so an estimate is reproducible."""
        if self.validation is None:
            return None
        if draws not in self._shifts:
            probs, classes = self.validation.probs, self.validation.classes
            rng = np.random.default_rng(0)
            fitted = np.bincount(classes, minlength=len(CLASSES)) >= BIAS_MIN_IMAGES
            whole = fit_class_bias(probs, classes, fitted, self.priors)
            shifts = np.empty((draws, len(CLASSES)))
            for i in range(draws):
                rows = rng.integers(0, len(classes), len(classes))
                shifts[i] = fit_class_bias(probs[rows], classes[rows], fitted, self.priors) - whole
            self._shifts[draws] = shifts
        return self._shifts[draws]


def calibration_source(reference: Path) -> Source:
    """The priors and class bias of the model in ``reference`` (a model folder, or its
    ``reference_stats.csv``: priors only).

    Raises:
        UncalibratedModelError: a model folder without its calibration.
        EstimateSourceError: no labels in the reference, or a calibration past reading.
    """
    folder = reference if reference.is_dir() else reference.parent
    path = reference / REFERENCE if reference.is_dir() else reference
    if (folder / "model.json").is_file() and not (folder / CALIBRATION).is_file():
        raise UncalibratedModelError(
            f"{folder} has no {CALIBRATION}: its probabilities are not calibrated, so no "
            "estimate can be read from them (register the model through evaluate)"
        )
    try:
        frame = pd.read_csv(
            path, usecols=lambda c: c in ("split", "dx", *INPUTS, *PROBABILITY_FIELDS)
        )
        labelled = frame[frame["split"].isin(["train", "val"])]
        classes = labelled["dx"].map({c: i for i, c in enumerate(CLASSES)})
    except (OSError, ValueError, KeyError) as e:
        raise EstimateSourceError(
            f"{path}: no split and dx columns to take priors from: {e}"
        ) from e
    counts: np.ndarray = np.bincount(classes.dropna().astype(int), minlength=len(CLASSES))
    if counts.sum() == 0:
        raise EstimateSourceError(f"{path} holds no labelled train or validation image")
    inputs = labelled[list(INPUTS)] if set(INPUTS) <= set(labelled.columns) else None
    kept = classes.notna() & (inputs.notna().all(axis=1) if inputs is not None else True)
    return Source(counts / counts.sum(), _class_bias(folder / CALIBRATION),
                  classes[kept].to_numpy(int) if inputs is not None else None,
                  inputs[kept].to_numpy(float) if inputs is not None else None,
                  _validation(labelled, classes))  # fmt: skip


def _validation(labelled: pd.DataFrame, classes: pd.Series) -> Validation | None:
    """The validation rows' probabilities and classes (None: the reference has no
    probabilities, as a model registered before they were kept)."""
    fields = list(PROBABILITY_FIELDS)
    if not set(fields) <= set(labelled.columns):
        return None
    rows = (labelled["split"] == "val") & classes.notna() & labelled[fields].notna().all(axis=1)
    if not rows.any():
        return None
    probs = labelled.loc[rows, fields].to_numpy(float)
    return Validation(probs / probs.sum(axis=1, keepdims=True), classes[rows].to_numpy(int))


def _class_bias(path: Path) -> np.ndarray | None:
    """The calibration's class bias, in :data:`CLASSES` order; None where none was fitted."""
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text()).get(CLASS_BIAS)
        return None if found is None else np.array([float(found[c]) for c in CLASSES])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EstimateSourceError(f"{path}: no class bias to read: {e}") from e


def no_reference() -> tuple[Path | None, str]:
    return None, ""


class Sources:
    """Each model version's calibration source: ``reference``'s folder for its own version
    (read each time: a monitor given a reference folder needs no registry; the drift watch's
    :meth:`~dermaops.monitoring.drift_watch.DriftWatch.current_reference`), any other
    version's from its model folder in the registry (``registry_model``), fetched and read
    once. A version that cannot be fetched is tried again after ``REFETCH_S``; one whose model
    was never calibrated stays refused. Safe from several threads (the estimates' and the
    rollouts'): a version is fetched by one of them at a time, and a version already read
    never waits on another's fetch."""

    def __init__(
        self, registry_model: str,
        reference: Callable[[], tuple[Path | None, str]] = no_reference,
        fetch: Callable[[str], Path] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.reference = reference
        self.registry_model = registry_model
        self.fetch = fetch or self._from_registry
        self.clock = clock
        self.lock = threading.Lock()  # guards the dictionaries below, never held over a fetch
        self.fetching: dict[str, threading.Lock] = {}  # version -> its fetch's lock
        self.read: dict[str, Source | str] = {}  # str: why its model is not calibrated
        self.unfetchable: dict[str, tuple[float, str]] = {}  # version -> (when, why)

    def __call__(self, version: str) -> Source:
        """``version``'s source.

        Raises:
            UncalibratedModelError: its model was never calibrated.
            EstimateSourceError: none to be read (no registry, a fetch that failed, a
                reference without labels).
        """
        reference, own = self.reference()
        if reference is not None and own and version == own:
            return calibration_source(reference)
        found = self._cached(version)
        if found is None:
            with self._fetch_lock(version):
                found = self._cached(version) or self._read(version)
        if isinstance(found, str):
            raise UncalibratedModelError(found)  # a fresh error each time, no old traceback
        return found

    def get(self, version: str) -> Source | None:
        """``version``'s source, or None (why is logged)."""
        try:
            return self(version)
        except EstimateSourceError as e:
            log.debug("no calibration source for version %s: %s", version, e)
            return None

    def _cached(self, version: str) -> Source | str | None:
        with self.lock:
            return self.read.get(version)

    def _fetch_lock(self, version: str) -> threading.Lock:
        with self.lock:
            return self.fetching.setdefault(version, threading.Lock())

    def _read(self, version: str) -> Source | str:
        if not self.registry_model or not version.isdigit():
            raise EstimateSourceError(f"version {version!r} is not one of a registered model's")
        with self.lock:
            when, why = self.unfetchable.get(version, (float("-inf"), ""))
        if self.clock() - when < REFETCH_S:
            raise EstimateSourceError(f"version {version}'s model could not be fetched: {why}")
        try:
            folder = self.fetch(version)
        except Exception as e:  # the registry's clients raise their own (MLflow's, boto's)
            with self.lock:
                self.unfetchable[version] = (self.clock(), str(e))
            log.warning("no calibration source for version %s yet: %s", version, e)
            raise EstimateSourceError(f"version {version}'s model could not be fetched: {e}") from e
        try:
            found: Source | str = calibration_source(folder)
        except UncalibratedModelError as e:
            found = str(e)
        with self.lock:
            self.read[version] = found  # other EstimateSourceErrors: a damaged folder, read again
        return found

    def _from_registry(self, version: str) -> Path:
        folder, _ = resolve_model(f"models:/{self.registry_model}/{version}", Home.from_env())
        return folder

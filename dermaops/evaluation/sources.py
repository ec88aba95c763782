"""Each model version's calibration source (its priors and class bias), for the estimates of
its answers: the monitor's, and the rollout judge's, which estimates both versions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dermaops.evaluation.estimate import (
    EstimateSourceError,
    Source,
    UncalibratedModelError,
    calibration_source,
)
from dermaops.model.uri import resolve_model
from dermaops.settings import Home

log = logging.getLogger(__name__)

REFETCH_S = 600.0  # seconds before a version whose model could not be fetched is retried


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

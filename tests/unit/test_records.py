"""The recorder: statistics and records made after the answer, bounded, never lost silently."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from dermaops.data.features import image_stats
from serving.records import Pending, Recorder


def _pixels(n: int, value: int = 120) -> list[np.ndarray]:
    return [np.full((225, 300, 3), value + i, np.uint8) for i in range(n)]


def test_records_carry_the_statistics_prepare_computes_and_the_answer() -> None:
    written: list[dict[str, Any]] = []
    observed: list[list[dict[str, float]]] = []
    recorder = Recorder(observed.append, [written.append], lambda n: None)
    pixels = _pixels(2)
    answers = [{"prediction": "nv", "request_id": "r1"}, {"prediction": "mel", "request_id": "r1"}]
    assert recorder.submit(Pending(pixels, [(600, 450), (800, 600)], lambda: answers))
    assert recorder.flush(10)
    assert [r["prediction"] for r in written] == ["nv", "mel"]
    expected = image_stats(pixels[1], (800, 600))
    assert written[1]["brightness"] == round(expected["brightness"], 5)
    assert written[1]["width"] == 800.0 and observed == [[image_stats(pixels[0], (600, 450)),
                                                         expected]]  # fmt: skip
    recorder.close()


def test_a_full_backlog_drops_and_counts_and_a_failing_batch_stops_nothing() -> None:
    gate = threading.Event()
    written: list[dict[str, Any]] = []
    dropped: list[int] = []

    def slow(record: dict[str, Any]) -> None:
        gate.wait(10)
        written.append(record)

    recorder = Recorder(lambda stats: None, [slow], dropped.append, max_images=3)
    one = [{"prediction": "nv"}]
    assert recorder.submit(Pending(_pixels(1), [(600, 450)], lambda: one))
    assert recorder.submit(Pending(_pixels(2), [(600, 450)] * 2, lambda: one * 2))
    assert not recorder.submit(Pending(_pixels(1), [(600, 450)], lambda: one))  # 4 > 3
    assert dropped == [1]

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("a bug in building a record")

    gate.set()
    assert recorder.flush(10)
    assert recorder.submit(Pending(_pixels(1), [(600, 450)], broken))
    assert recorder.submit(Pending(_pixels(1), [(600, 450)], lambda: one))
    recorder.close()
    assert len(written) == 4  # 1 + 2 + (broken: none) + 1, written before close returned


def test_batches_after_close_are_counted_not_queued_to_a_dead_thread() -> None:
    dropped: list[int] = []
    recorder = Recorder(lambda stats: None, [], dropped.append)
    recorder.close()
    assert not recorder.submit(Pending(_pixels(2), [(600, 450)] * 2, list))
    assert dropped == [2] and recorder.flush(1)

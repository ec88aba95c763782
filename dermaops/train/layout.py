"""Names in a run folder, for the train loop that writes them and for code that looks into a
run folder without torch (the train task following a TrainJob on the shared volume)."""

from __future__ import annotations

from typing import Final

CHECKPOINT: Final = "checkpoint.pt"  # the last finished epoch: weights, optimizer, history

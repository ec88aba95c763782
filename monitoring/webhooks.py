"""What is posted to the monitor, as types: Alertmanager's webhook and the predictor's records.

The routes parse their bodies themselves (a malformed body is a 400 that says what was
expected; a batch of records is judged record by record), so these types are both what the
parsing checks and what the monitor's OpenAPI document declares.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dermaops.inference_log import RecordBatch
from dermaops.openapi import Bodies


class Alert(BaseModel):
    """One alert of Alertmanager's webhook (version 4); fields it may add later are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None  # noqa: N815  # Alertmanager's field names
    endsAt: str | None = None  # noqa: N815
    fingerprint: str | None = None


class AlertmanagerWebhook(BaseModel):
    """The body Alertmanager posts to a ``webhook_configs`` receiver."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str | None = None
    status: Literal["firing", "resolved"] | None = None
    receiver: str | None = None
    groupKey: str | None = None  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    alerts: list[Alert]

    def firing(self, action: str) -> list[Alert]:
        """The firing alerts labelled ``action=<action>``."""
        return [a for a in self.alerts if a.status == "firing" and a.labels.get("action") == action]


class RecordsAnswer(BaseModel):
    accepted: int = Field(description="Records appended to the inference log.")
    rejected: int = Field(description="Records that are not inference records (not kept).")
    dropped: int = Field(0, description="Records the log could not write (its disk, say).")


BODIES = {
    ("post", "/records"): Bodies(RecordBatch, RecordsAnswer, "What became of the records."),
    ("post", "/alerts"): Bodies(AlertmanagerWebhook, None),
}

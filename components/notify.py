"""Stage ``notify``: the exit handler; a Markdown summary and a Slack/Discord webhook post."""

from kfp.dsl import Markdown, Output, PipelineTaskFinalStatus


def notify(
    status: PipelineTaskFinalStatus,
    summary: Output[Markdown],
    pipeline: str = "training",
    webhook_url: str = "",
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> None:
    """Summarise how the run ended, naming the failed stage; post it when a hook is set.

    The webhook comes from ``webhook_url`` or the ``DERMAOPS_WEBHOOK_URL`` env var (a Secret
    on a cluster). Failing to reach it fails this task, after the summary is written.
    """
    import logging
    import os
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("notify"):
        from dermaops.errors import DermaOpsError
        from dermaops.notify import (
            WEBHOOK_ENV,
            RunFacts,
            RunOutcome,
            post,
            summary_markdown,
            webhook_payload,
        )
        from dermaops.registry import Registry, RegistrySettings

        failed, error, facts = "", "", RunFacts()
        try:
            reg = Registry(RegistrySettings(model_name=model_name))
            if status.state != "SUCCEEDED":
                failed, error = reg.failure(kfp_run_id)
            reg.tag_pipeline_run(kfp_run_id, RunFacts(state=status.state))
            facts = reg.run_facts(kfp_run_id)
        except DermaOpsError as e:
            logging.getLogger(__name__).warning("no facts from MLflow for the summary: %s", e)
        outcome = RunOutcome(
            pipeline, kfp_run_id, status.state, failed, error or status.error_message or "", facts
        )
        Path(summary.path).write_text(summary_markdown(outcome))
        url = webhook_url or os.environ.get(WEBHOOK_ENV, "")
        if url:
            post(url, webhook_payload(outcome))

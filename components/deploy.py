"""Stage ``deploy``: reconcile now, so the champion is served (on the chart's predictor, or by
the local predictor)."""

from kfp.dsl import Artifact, Output


def deploy(
    patches: Output[Artifact],  # what the reconcile found and did, as JSON
    version: str,
    target: str = "kubernetes",
    namespace: str = "dermaops",
    release: str = "dermaops",
    canary_percent: int = 0,
    pipeline: str = "training",
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> str:
    """Serve the champion: what ``dermaops registry reconcile`` does, right after ``version``
    was promoted. If another promotion or a rollback moved the champion since, the champion is
    served, not ``version``, and the answer says so.

    ``target``: ``kubernetes`` JSON-patches the storage URI, the version and the canary of the
    objects the chart rendered (it renders no object itself); ``local`` points the local
    predictor (``dermaops serve``) at the version. ``canary_percent`` 0 keeps the chart's.

    Returns:
        What was done, e.g. ``patched InferenceService dermaops/dermaops`` or the pointer file.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("deploy", kfp_run_id, model_name, pipeline):
        from dermaops.notify import RunFacts
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.reconcile import reconcile
        from dermaops.registry.serving import serving_for

        reg = Registry(RegistrySettings(model_name=model_name))
        serving = serving_for(target, release=release, namespace=namespace,
                              canary_percent=canary_percent or None)  # fmt: skip
        done = reconcile(reg, serving)
        Path(patches.path).write_text(json.dumps(asdict(done), indent=2))
        said = done.action
        if done.champion != version:
            said = f"version {version} is no longer champion ({done.champion} is): {said}"
        reg.tag_pipeline_run(kfp_run_id, RunFacts(deployed=said))
    patches.metadata.update({"version": str(done.served), "target": target})
    return said

"""Stage ``deploy``: serve the champion, on the chart's predictor or with the local predictor."""

from kfp.dsl import Artifact, Output


def deploy(
    patches: Output[Artifact],  # the patches sent (kubernetes), or the pointer written (local)
    version: str,
    target: str = "kubernetes",
    namespace: str = "dermaops",
    release: str = "dermaops",
    canary_percent: int = 0,
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> str:
    """Point the release's predictor at ``version``: what ``dermaops deploy`` does.

    ``target``: ``kubernetes`` JSON-patches the storage URI, the version and the canary of the
    objects the chart rendered (it renders no object itself); ``local`` points the local
    predictor (``dermaops serve``) at the version. ``canary_percent`` 0 keeps the chart's.

    Returns:
        What was done, e.g. ``patched InferenceService dermaops/dermaops`` or the pointer file.
    """
    import json
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("deploy", kfp_run_id, model_name):
        from dermaops.deploy import Promotion, write_pointer
        from dermaops.errors import ConfigError
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.model import storage_uri
        from dermaops.settings import Home

        reg = Registry(RegistrySettings(model_name=model_name))
        if target == "kubernetes":
            from dermaops.components.kube import deploy as deploy_release

            promotion = Promotion(version, storage_uri(reg, version), canary_percent or None)
            sent = deploy_release(promotion, release, namespace)
            Path(patches.path).write_text(json.dumps([p.as_dict() for p in sent], indent=2))
            done = "; ".join(f"patched {p.kind} {p.namespace}/{p.name}" for p in sent)
            uri = promotion.storage_uri
        elif target == "local":
            uri = reg.client.get_model_version_download_uri(model_name, version)
            done = str(write_pointer(Home.from_env().serving, uri, model_name, version))
            Path(patches.path).write_text(Path(done).read_text())
        else:
            raise ConfigError(f"deploy target {target!r} is not kubernetes or local")
        reg.tag_pipeline_run(kfp_run_id, {"deployed": f"version {version}: {done}"})
    patches.metadata.update({"storage_uri": uri, "version": version, "target": target})
    return done

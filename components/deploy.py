"""Stage ``deploy``: serve the champion, on KServe or with the local predictor."""

from kfp.dsl import Artifact, Output


def deploy(
    manifest: Output[Artifact],
    version: str,
    target: str = "kubernetes",
    name: str = "dermaops",
    namespace: str = "dermaops",
    image: str = "ghcr.io/dermaops/serving:0.1.0",
    canary_percent: int = 10,
    service: dict = {},  # noqa: B006 (KFP reads defaults from the signature)
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> str:
    """Render the InferenceService for ``version``'s artifact URI and apply it.

    ``target``: ``kubernetes`` applies it with the in-cluster client; ``local`` points the
    local predictor (``dermaops serve``) at the version. ``service`` takes other
    ``ServiceSettings`` fields (replicas, resources, GPUs).

    Returns:
        What was done, e.g. ``created dermaops/dermaops`` or the local pointer file.
    """
    from pathlib import Path

    import yaml

    from dermaops.components.runtime import stage

    with stage("deploy", kfp_run_id, model_name):
        from dermaops.deploy import ServiceSettings, inference_service, write_pointer
        from dermaops.errors import ConfigError
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.settings import Home

        reg = Registry(RegistrySettings(model_name=model_name))
        uri = reg.client.get_model_version_download_uri(model_name, version)
        settings = ServiceSettings(
            **{**service, "name": name, "namespace": namespace, "image": image,
               "canary_percent": canary_percent}
        )  # fmt: skip
        isvc = inference_service(uri, version, settings)
        Path(manifest.path).write_text(yaml.safe_dump(isvc, sort_keys=False))
        if target == "kubernetes":
            from dermaops.components.kube import apply_inference_service

            done = apply_inference_service(isvc)
        elif target == "local":
            done = str(write_pointer(Home.from_env().serving, uri, model_name, version))
        else:
            raise ConfigError(f"deploy target {target!r} is not kubernetes or local")
        reg.tag_pipeline_run(kfp_run_id, {"deployed": f"version {version}: {done}"})
    manifest.metadata.update({"storage_uri": uri, "version": version, "target": target})
    return done

"""Stage ``ingest``: the raw data set, from a public source, a path or the generator."""

from kfp.dsl import Dataset, Output


def ingest(
    raw: Output[Dataset],
    source: str = "synthetic",
    path: str = "",
    n: int = 1000,
    seed: int = 0,
    base_url: str = "",
    download_attempts: int = 6,
    feedback: str = "",
    keep_champion_split: bool = False,
    model_name: str = "dermaops",
) -> None:
    """Fill ``raw`` with a HAM10000-layout set; merge clinician feedback from ``feedback``.

    With ``keep_champion_split`` (every run of the pipelines), lesions keep the split the
    champion was trained and judged on, so it is never re-scored on what it trained on: new
    lesions of the data set are dealt to every split, feedback (always new lesions) to train or
    val.
    """
    import tempfile
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("ingest"), tempfile.TemporaryDirectory() as tmp:
        from dermaops.data.ingest import IngestSettings
        from dermaops.data.ingest import ingest as run
        from dermaops.settings import Home

        pins = ""
        if keep_champion_split:
            from dermaops.registry import Registry, RegistrySettings
            from dermaops.registry.promotion import champion_split

            found = champion_split(Registry(RegistrySettings(model_name=model_name)), Path(tmp))
            pins = str(found or "")
        settings = IngestSettings(
            source=source, path=path, n=n, seed=seed, base_url=base_url,
            download_attempts=download_attempts, feedback=feedback, split_pins=pins,
        )  # fmt: skip
        result = run(Path(raw.path), settings, Home.from_env())
    raw.metadata.update(
        {
            "source": source,
            "images": result.images,
            "feedback_images": result.feedback_images,
            "generated": result.generated,
            "kept_champion_split": bool(pins),
        }
    )

"""Stage ``prepare``: decode, quarantine, split by lesion, cache pixels and drift reference."""

from kfp.dsl import Dataset, Input, Output


def prepare(
    raw: Input[Dataset],
    prepared: Output[Dataset],
    cache_height: int = 225,
    seed: int = 42,
) -> None:
    """Prepare ``raw`` into ``prepared`` (see ``dermaops data prepare``)."""
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("prepare"):
        from dermaops.data.prepare import PrepareSettings
        from dermaops.data.prepare import prepare as run

        result = run(
            Path(raw.path),
            Path(prepared.path),
            PrepareSettings(cache_height=cache_height, seed=seed),
        )
    prepared.metadata.update(
        {
            "images": result.report["images"]["prepared"],
            "quarantined": result.report["images"]["quarantined"],
            "generated": result.report["dataset"]["generated"],
            "reused": result.skipped,
        }
    )

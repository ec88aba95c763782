"""The model split at its head, the embedding projection, and the reference join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermaops.model.embedding import WithEmbedding
from dermaops.model.factory import ARCHS, build_model
from dermaops.model.projection import PROJECTION_NAMES, Projection, ProjectionError
from dermaops.model.reference import ReferenceError, join_reference, write_outputs


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_large"])
def test_split_model_gives_the_same_logits_and_leaves_the_model_whole(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        logits, embedding = WithEmbedding(model, arch).eval()(x)
    head = model.get_submodule(ARCHS[arch].head)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert embedding.shape == (2, head.in_features)
    assert isinstance(head, torch.nn.Linear), "the original model keeps its head"


def test_projection_finds_the_main_directions_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    direction = np.zeros(16)
    direction[3] = 1.0
    embeddings = rng.normal(size=(200, 1)) * 10 * direction + rng.normal(size=(200, 16)) * 0.1
    projection = Projection.fit(embeddings)
    assert projection.components.shape == (3, 16)
    assert abs(projection.components[0, 3]) > 0.99 and projection.explained[0] > 0.9
    projected = projection(embeddings)
    assert projected.shape == (200, 3) and abs(projected[:, 0].mean()) < 1e-3
    projection.save(tmp_path / "p.json")
    again = Projection.load(tmp_path / "p.json")
    assert np.allclose(again(embeddings), projected, atol=1e-5)


def test_projection_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match="more than 3"):
        Projection.fit(np.ones((3, 8)))
    projection = Projection.fit(np.random.default_rng(1).normal(size=(20, 8)))
    with pytest.raises(ProjectionError, match="width 5"):
        projection(np.ones((2, 5)))
    (tmp_path / "bad.json").write_text('{"mean": [1, 2]}')
    with pytest.raises(ProjectionError, match="cannot read"):
        Projection.load(tmp_path / "bad.json")


def test_reference_joins_model_outputs_to_the_rows_that_have_them(tmp_path: Path) -> None:
    stats = pd.DataFrame({"image_id": ["a", "b", "c"], "split": ["train", "val", "test"],
                          "brightness": [0.1, 0.2, 0.3]})  # fmt: skip
    stats.to_csv(tmp_path / "stats.csv", index=False)
    probs = np.array([[0.1, 0.7, 0.05, 0.05, 0.05, 0.03, 0.02], [0.9, 0.1, 0, 0, 0, 0, 0]])
    write_outputs(tmp_path / "out.csv", ["b", "c"], probs, np.ones((2, 3)))
    assert join_reference(tmp_path / "stats.csv", tmp_path / "out.csv", tmp_path / "ref.csv") == 2
    ref = pd.read_csv(tmp_path / "ref.csv").set_index("image_id")
    assert ref.loc["b", "prediction"] == "bcc" and ref.loc["b", "confidence"] == 0.7
    assert ref.loc["c", "prediction"] == "akiec" and pd.isna(ref.loc["a", "prediction"])
    assert list(PROJECTION_NAMES) <= list(ref.columns)
    write_outputs(tmp_path / "other.csv", ["x", "y"], probs, np.ones((2, 3)))
    with pytest.raises(ReferenceError, match="not from one prepared set"):
        join_reference(tmp_path / "stats.csv", tmp_path / "other.csv", tmp_path / "ref2.csv")

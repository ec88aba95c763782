"""The model factory: every architecture, its head and last block, and weights sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dermaops.model.factory import (
    ARCHS,
    WeightsUnavailableError,
    build_model,
    head_parameters,
    last_block_parameters,
)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_arch_builds_with_a_seven_class_head(name: str) -> None:
    model = build_model(name, 7, "none").eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    head, block = head_parameters(model, name), last_block_parameters(model, name)
    assert head[0].shape[0] == 7
    assert block and not {id(p) for p in head} & {id(p) for p in block}


def test_weights_from_a_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("resnet18", 7)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = build_model("resnet18", 7, tmp_path / "w.pt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    with pytest.raises(WeightsUnavailableError, match="cannot load weights"):
        build_model("resnet18", 7, tmp_path / "bad.pt")


def test_imagenet_weights_not_cached_and_not_downloadable_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # loopback discard port: refused at once
    with pytest.raises(WeightsUnavailableError, match="not in torchvision's cache"):
        build_model("resnet18", 7, "imagenet")


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        build_model("vgg11", 7)

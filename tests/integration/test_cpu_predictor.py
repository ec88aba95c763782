"""The CPU predictor without torch answers as the torch path does: probabilities and Grad-CAM.

The serving graph holds the stem after decoding and, for pooled-linear heads, the class activation
maps. Here a model of each such architecture is exported, then 50 generated photographs of mixed
sizes and orientations go through the predictor with the ONNX backend (image bytes in, as a client
sends them) and through the torch path training and evaluation use; and the graph's heatmaps are
compared with ``pytorch-grad-cam``'s GradCAM on the torch model.

Why 1e-3 and not 1e-4: the graph's model part matches torch to about 2e-6, but its antialiased
Resize (ONNX Runtime) and torch's sum their taps in another order, and the stem rounds the result to
whole grey levels as training's cache does; about 0.02 % of pixels fall on the other side of a
rounding tie, one level apart, which moves a confident model's probabilities by up to about 7e-4.
No float resize can promise the same sums; the test bounds the pixels and the top-1 instead.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dermaops.imaging import decode
from dermaops.model.artifact import GRAPH_OUTPUTS, ModelArtifact, Preprocessing, save_model_dir
from dermaops.model.cam import heatmaps
from dermaops.model.export import export_onnx
from dermaops.model.factory import ARCHS, build_model
from dermaops.model.stem import centre_crop, eval_batch, fit_short_side, pixels_to_batch
from dermaops.serving.backends import NVIDIA_DRIVER, ExplainUnavailableError, OnnxBackend
from dermaops.serving.model import DermaOpsModel
from dermaops.serving.settings import ServingSettings
from dermaops.settings import Home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRE = Preprocessing(image_size=224)
SIZES = [(600, 450), (450, 600), (1024, 768), (300, 300), (640, 427), (301, 226), (800, 533)]
ORIENTATIONS = [1, 6, 3, 8, 1]  # EXIF: upright, 90 cw, 180, 90 ccw


def photographs(n: int, seed: int = 0) -> list[bytes]:
    """Smooth random RGB pictures, JPEG and PNG, of mixed sizes, some with an EXIF rotation."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        if i % 3 == 2:
            image.save(buf, "PNG")
        else:
            exif = Image.Exif()
            exif[0x0112] = ORIENTATIONS[i % len(ORIENTATIONS)]
            image.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        out.append(buf.getvalue())
    return out


def varied_model(arch: str, image_size: int = 224) -> nn.Module:
    """A random model whose answers differ between images: its normalisation statistics are
    recomputed on pictures (a random EfficientNet's activations otherwise vanish), and its head
    is made confident. Pretrained weights cannot be downloaded here."""
    torch.manual_seed(0)
    model = build_model(arch, 7)
    pre = Preprocessing(image_size=image_size)
    pixels = list(cache_pixels(pre, photographs(16, seed=1)))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batch
    model.train()
    with torch.no_grad():
        model(pixels_to_batch(pixels, pre))
        model.get_submodule(ARCHS[arch].head).weight.mul_(10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1  # as trained models have it
            # Channels nearly constant on 16 pictures would turn rounding noise into big swings
            # that no trained model shows.
            module.running_var.clamp_(min=1e-3)
    return model.eval()


@pytest.fixture(scope="module", params=["resnet18", "efficientnet_b0"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = request.param
    folder = tmp_path_factory.mktemp(arch) / "model"
    model = varied_model(arch)
    save_model_dir(folder, model, arch, PRE, {})
    export_onnx(model, arch, PRE, folder / "model.onnx")
    return folder


def cache_pixels(pre: Preprocessing, images: list[bytes]) -> np.ndarray:
    """Decoded as the predictor decodes (JPEG draft mode down to the cache size), then cached."""
    return np.stack([pre.cache_pixels(decode(b, min_size=pre.cache_size).image) for b in images])


def torch_path(artifact: ModelArtifact, images: list[bytes]) -> tuple[np.ndarray, torch.Tensor]:
    """Probabilities as training and evaluation compute them, and the batch the model saw."""
    x = pixels_to_batch(list(cache_pixels(artifact.preprocessing, images)), artifact.preprocessing)
    with torch.no_grad():
        logits = artifact.torch_model()(x).numpy()
    return artifact.probabilities(logits), x


def test_probabilities_from_image_bytes_equal_the_torch_path(
    exported: Path, tmp_path: Path
) -> None:
    images = photographs(50)
    settings = ServingSettings(model_uri=str(exported), backend="onnx", inference_log=False)
    predictor = DermaOpsModel("dermaops", settings, Home(tmp_path))
    predictor.load()
    assert predictor.backend.name == "onnxruntime"
    served = []
    for start in range(0, len(images), 25):
        chunk = images[start : start + 25]
        body = {"instances": [{"b64": base64.b64encode(b).decode()} for b in chunk]}
        answer, _ = asyncio.run(predictor(body))
        served += [list(p["probabilities"].values()) for p in answer["predictions"]]
    predictor.stop()

    expected, _ = torch_path(predictor.artifact, images)
    got = np.array(served)
    assert expected.std(axis=0).max() > 0.01, "the model must answer differently per image"
    assert np.abs(got - expected).max() <= 1e-3  # see the module's docstring
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_heatmaps_equal_gradcam_on_the_torch_model(exported: Path) -> None:
    """Grad-CAM reads the square the graph saw, so the maps are compared, not the rounding ties
    of the resize (bounded below, and in the probabilities' test)."""
    artifact = ModelArtifact.load(exported)
    pixels = cache_pixels(artifact.preprocessing, photographs(50))
    explained = OnnxBackend(artifact).explain(pixels)

    seen = centre_crop(fit_short_side(torch.from_numpy(pixels), 224), 224).numpy()
    off = np.abs(explained.images.astype(int) - seen)
    assert off.max() <= 1 and (off > 0).mean() < 1e-3  # rounding ties, one grey level, rare

    x = eval_batch(torch.from_numpy(explained.images), artifact.preprocessing)
    model = artifact.torch_model()
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    assert explained.logits.argmax(axis=1).tolist() == top
    expected = heatmaps(model, artifact.arch, x, top)
    assert explained.heatmaps.shape == expected.shape == (50, 224, 224)
    assert expected.max(axis=(1, 2)).min() > 0.5, "Grad-CAM must show something on every image"
    assert np.abs(explained.heatmaps - expected).max() <= 1e-3


def test_a_head_that_is_not_pooled_linear_is_served_but_not_explained_on_cpu(
    tmp_path: Path,
) -> None:
    pre = Preprocessing(image_size=64)
    model = build_model("mobilenet_v3_large", 7).eval()
    folder = tmp_path / "model"
    save_model_dir(folder, model, "mobilenet_v3_large", pre, {})
    export_onnx(model, "mobilenet_v3_large", pre, folder / "model.onnx")
    backend = OnnxBackend(ModelArtifact.load(folder))
    assert backend.outputs == set(GRAPH_OUTPUTS[:3])
    pixels = np.zeros((2, 225, 300, 3), np.uint8)
    logits, embedding = backend(pixels)
    assert logits.shape == (2, 7) and embedding.shape[0] == 2
    with pytest.raises(ExplainUnavailableError, match="GPU predictor"):
        backend.explain(pixels)


@pytest.mark.skipif(
    any(Path(p).exists() for p in NVIDIA_DRIVER),
    reason=f"an NVIDIA driver is loaded here ({' or '.join(NVIDIA_DRIVER)} exists): auto then "
    "rightly asks torch for CUDA",
)
def test_auto_serves_onnx_without_importing_torch_where_torch_is_installed(
    served_model: Path, tmp_path: Path
) -> None:
    """Importing torch only to ask whether there is a GPU cost each CPU replica ~400 MB."""
    import subprocess
    import sys

    script = (
        "import sys, resource\n"
        "from dermaops.serving.model import DermaOpsModel\n"
        "from dermaops.serving.settings import ServingSettings\n"
        f"m = DermaOpsModel('dermaops', ServingSettings(model_uri={str(served_model)!r},"
        " inference_log=False))\n"
        "m.load()\n"
        "print(m.backend.name, 'torch' in sys.modules)\n"
    )
    env = {"DERMAOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True, timeout=300)  # fmt: skip
    assert run.stdout.split() == ["onnxruntime", "False"], run.stderr[-2000:]

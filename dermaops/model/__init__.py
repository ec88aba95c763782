"""The model: factory, preprocessing stem, the registered model folder, export, embedding and CAM.

``from dermaops.model import ModelArtifact`` loads only the module that defines it: torch comes
with the factory, the stem, the embedding, export and CAM, never with this face.
"""

from typing import TYPE_CHECKING

from dermaops._lazy import attach

if TYPE_CHECKING:
    from dermaops.model.artifact import ModelArtifact as ModelArtifact
    from dermaops.model.artifact import Preprocessing as Preprocessing
    from dermaops.model.artifact import locate_model_dir as locate_model_dir
    from dermaops.model.artifact import save_model_dir as save_model_dir
    from dermaops.model.cam import heatmaps as heatmaps
    from dermaops.model.embedding import WithEmbedding as WithEmbedding
    from dermaops.model.export import export_onnx as export_onnx
    from dermaops.model.factory import ARCHS as ARCHS
    from dermaops.model.factory import build_model as build_model
    from dermaops.model.heatmap import overlay as overlay
    from dermaops.model.inference import resolve_device as resolve_device
    from dermaops.model.projection import Projection as Projection
    from dermaops.model.uri import load_model as load_model
    from dermaops.model.uri import resolve_model as resolve_model

__getattr__, __dir__, __all__ = attach(__name__, __file__)

"""The seven HAM10000 diagnoses: codes, full names, and their fixed order."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

#: Class codes in the order every model output uses (alphabetical, as in HAM10000's metadata).
CLASSES: Final[tuple[str, ...]] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

FULL_NAMES: Final = MappingProxyType(
    {
        "akiec": "Actinic keratoses and intraepithelial carcinoma",
        "bcc": "Basal cell carcinoma",
        "bkl": "Benign keratosis-like lesions",
        "df": "Dermatofibroma",
        "mel": "Melanoma",
        "nv": "Melanocytic nevi",
        "vasc": "Vascular lesions",
    }
)

#: Share of each class among HAM10000's 10,015 images (Tschandl et al., 2018).
HAM10000_SHARES: Final = MappingProxyType(
    {
        "akiec": 327 / 10015,
        "bcc": 514 / 10015,
        "bkl": 1099 / 10015,
        "df": 115 / 10015,
        "mel": 1113 / 10015,
        "nv": 6705 / 10015,
        "vasc": 142 / 10015,
    }
)

INDEX: Final = MappingProxyType({name: i for i, name in enumerate(CLASSES)})


def full_name(code: str) -> str:
    """The full diagnosis name of a class code, e.g. ``mel`` -> ``Melanoma``."""
    try:
        return FULL_NAMES[code]
    except KeyError as e:
        raise ValueError(f"unknown diagnosis {code!r}; expected one of {', '.join(CLASSES)}") from e

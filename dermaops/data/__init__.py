"""Data: HAM10000's sources and schema, the generated set, the lesion-grouped split, prepare.

Also clinician feedback, and the per-image statistics and privacy rules every stored image follows.
The stages are read from their modules (``from dermaops.data.prepare import prepare``; likewise
``fetch`` and ``ingest``): a function named like its module cannot be offered here.
"""

from typing import TYPE_CHECKING

from dermaops._lazy import attach

if TYPE_CHECKING:
    from dermaops.data.download import RetryPolicy as RetryPolicy
    from dermaops.data.features import STAT_NAMES as STAT_NAMES
    from dermaops.data.features import image_stats as image_stats
    from dermaops.data.ingest import IngestSettings as IngestSettings
    from dermaops.data.loaders import load_raw as load_raw
    from dermaops.data.prepare import PrepareSettings as PrepareSettings
    from dermaops.data.prepared import PreparedSet as PreparedSet
    from dermaops.data.sources import SOURCES as SOURCES
    from dermaops.data.sources import Credentials as Credentials
    from dermaops.data.split import check_split as check_split
    from dermaops.data.split import split_by_lesion as split_by_lesion
    from dermaops.data.synth import SynthSettings as SynthSettings
    from dermaops.data.synth import synthesize as synthesize

__getattr__, __dir__, __all__ = attach(__name__, __file__)

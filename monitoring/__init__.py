"""dermaops.monitoring: drift of what the model sees, against what it was trained on.

The reference is the training split's per-image statistics (``reference_stats.csv``, written by
``prepare`` and registered with the model); live rows come from the predictor's inference log.
Both are computed by :func:`dermaops.data.features.image_stats` on the same cache pixels.
"""

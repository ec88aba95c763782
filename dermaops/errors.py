"""Exceptions of the core. Each says what went wrong and what the user can do about it."""

from __future__ import annotations


class DermaOpsError(Exception):
    """Base class of every error DermaOps raises on purpose."""


class ConfigError(DermaOpsError):
    """A settings file, environment variable or flag has a value that cannot be used."""


class ImageError(DermaOpsError):
    """An image cannot be decoded. ``reason`` is a short machine-readable code."""

    reason = "unreadable_image"


class NotAnImageError(ImageError):
    reason = "not_an_image"


class TruncatedImageError(ImageError):
    reason = "truncated_image"


class ImageTooLargeError(ImageError):
    reason = "image_too_large"


class DatasetLayoutError(DermaOpsError):
    """A raw data folder does not look like any layout DermaOps reads."""


class PreparedDataError(DermaOpsError):
    """A prepared data folder is missing, incomplete or was written by something else."""


class DownloadError(DermaOpsError):
    """A download failed after its retries."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file's size or hash differs from the one the source publishes."""


class UnsafeArchiveError(DermaOpsError):
    """An archive holds a member that would land outside its target folder, or a link."""


class CredentialsError(DermaOpsError):
    """A source needs credentials that were not found."""

"""DermaOps: train, register, serve and watch a 7-class dermoscopy classifier (HAM10000)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dermaops")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

"""ctxray-bench: a reproducible benchmark of CT-to-X-ray cross-modality knowledge distillation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctxray-bench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

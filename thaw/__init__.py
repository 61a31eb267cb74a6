"""Thaw's artifact types under the names they are registered with (``thaw.IngestionReport``).

TFX's Kubeflow entrypoint imports a custom artifact type's class from its type
name, so ``thaw.IngestionReport`` must be importable as exactly that; the
classes themselves live in components.artifacts.
"""

from components.artifacts import DataFingerprint, DataVerdict, IngestionReport

__all__ = ["DataFingerprint", "DataVerdict", "IngestionReport"]

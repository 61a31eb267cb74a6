"""Kubeflow Pipelines' ``system.HTML`` artifact type, for TFX's Kubeflow entrypoint.

The entrypoint imports a custom artifact's class from its type name; Thaw's
run report is of KFP's own type ``system.HTML`` (the one the KFP UI renders),
so that name must import. The class lives in components.artifacts.
"""

from components.artifacts import HtmlReport as HTML

__all__ = ["HTML"]

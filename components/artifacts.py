"""Artifact types of Thaw's own components."""

from tfx.types.artifact import Artifact


class IngestionReport(Artifact):
    """What ingestion did with every file: counts per split and class, and each
    quarantined path with its reason (ingestion_report.json)."""

    TYPE_NAME = "ThawIngestionReport"

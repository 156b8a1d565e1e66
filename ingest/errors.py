"""One error root for the platform side."""

from __future__ import annotations


class IngestError(Exception):
    """Anything ``tiyi-ingest`` refuses or cannot do, as a one-line message."""


class SettingsError(IngestError, ValueError):
    """A bad option or key file."""


class StoreError(IngestError, OSError):
    """The database cannot be reached or refused a statement."""

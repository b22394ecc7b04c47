"""Errors the ingest worker reports to its user, with a message that says what to do."""


class IngestError(RuntimeError):
    """An ingest or import that failed as a whole; nothing was published."""

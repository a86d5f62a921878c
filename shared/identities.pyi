# Types of shared/identities.py for CPython's type checkers.
INGEST_IDENTITY: str
ADMIN_IDENTITY: str

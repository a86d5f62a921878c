# Types of shared/identities.py for CPython's type checkers.
INGEST_IDENTITY: str
ADMIN_IDENTITY: str
INGEST_SHARED_GROUP: str

def worker_identity(identity: str, number: int) -> str: ...

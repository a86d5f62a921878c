# The service's identities on the broker: certificate CN = MQTT username = client id. Valid device
# ids (shared.protocol.valid_id) never contain ':', so no device certificate can hold them. Kept out of
# shared/protocol.py, which the node loads: every global there costs the node RAM.
INGEST_IDENTITY = "fieldlink:ingest"
ADMIN_IDENTITY = "fieldlink:admin"

# The MQTT shared-subscription group of `fieldlink ingest --workers N` when none is configured.
INGEST_SHARED_GROUP = "fieldlink-ingest"


def worker_identity(identity, number):
    """The identity of ingest worker `number` (1, 2, ...) of a service whose own identity is `identity`.
    Worker 1 is the service itself, so one worker keeps the session it always had; the others add
    ':worker-N' (a ':' that no device id holds). Each keeps its identity, and so its persistent session
    on the broker, across restarts: Mosquitto keeps a member's share of a shared subscription for that
    session alone (docs/architecture.md, "Workers and shared subscriptions")."""
    if number == 1:
        return identity
    return "%s:worker-%d" % (identity, number)

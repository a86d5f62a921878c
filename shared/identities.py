# The service's identities on the broker: certificate CN = MQTT username = client id. Valid device
# ids (shared.protocol.valid_id) never contain ':', so no device certificate can hold them. Kept out of
# shared/protocol.py, which the node loads: every global there costs the node RAM.
INGEST_IDENTITY = "fieldlink:ingest"
ADMIN_IDENTITY = "fieldlink:admin"

# The node's decoder of the service's acknowledgement (shared/protocol.py: decode_ack), on both
# interpreters: what the service's encoder (shared/decode.py: encode_ack) makes reads back; anything
# else is None (the node counts it as bad_acks), never an exception.
from shared import decode, protocol


def test_the_services_ack_reads_back():
    assert protocol.decode_ack(decode.encode_ack([17, 18], [19])) == ([17, 18], [19])
    assert protocol.decode_ack(decode.encode_ack([], [3])) == ([], [3])
    assert protocol.decode_ack(decode.encode_ack([2**53], [])) == ([2**53], [])
    full = list(range(decode.MAX_ACK_SEQS))
    assert protocol.decode_ack(decode.encode_ack(full, full)) == (full, full)


def test_either_list_may_be_missing_or_empty():
    assert protocol.decode_ack(b'{"v":1}') == ([], [])
    assert protocol.decode_ack(b'{"v":1,"stored":[],"refused":[]}') == ([], [])
    assert protocol.decode_ack(b'{"v":1,"refused":[5],"extra":"ignored"}') == ([], [5])


def test_a_wrong_version_is_ignored():
    for payload in (b'{"v":2,"stored":[1]}', b'{"stored":[1]}', b'{"v":true,"stored":[1]}', b'{"v":1.0,"stored":[1]}',
                    b'{"v":"1","stored":[1]}'):  # fmt: skip
        assert protocol.decode_ack(payload) is None, payload


def test_anything_else_is_none_never_an_exception():
    cases = [
        b"",
        b"{not json",
        b"[1]",
        b"null",
        b'{"v":1,"stored":17}',
        b'{"v":1,"stored":"17"}',
        b'{"v":1,"stored":[17.0]}',
        b'{"v":1,"stored":[true]}',
        b'{"v":1,"stored":[-1]}',
        b'{"v":1,"stored":[9007199254740993]}',
        b'{"v":1,"refused":[1e400]}',
        b'{"v":1,"stored":false}',
        b'{"v":1,"stored":[' + b"1," * 256 + b"1]}",
        b'{"v":1,"stored":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe",
        b"[" * 100000,
    ]
    for payload in cases:
        assert protocol.decode_ack(payload) is None, payload[:40]

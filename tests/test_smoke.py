from conftest import RawClient, ServerProcess


def test_ping(server: ServerProcess, raw: RawClient) -> None:
    raw.send(b"PING\r\n")
    assert raw.read_reply() == "PONG"

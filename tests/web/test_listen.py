"""`--web.listen-address` values: parsed like exporter-toolkit, bound before anything runs."""

from __future__ import annotations

import socket

import pytest

from prober.web.listen import ListenAddress, ListenError, bind, bind_all, parse_listen_address


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":9797", "", 9797),
        ("0.0.0.0:9797", "0.0.0.0", 9797),
        ("[::]:9797", "::", 9797),
        ("[::1]:0", "::1", 0),
        ("127.0.0.1:9797", "127.0.0.1", 9797),
        ("localhost:65535", "localhost", 65535),
    ],
    ids=["every-interface", "ipv4-any", "ipv6-any", "ipv6-loopback", "ipv4", "host-name"],
)
def test_listen_address_parses(text: str, host: str, port: int) -> None:
    assert parse_listen_address(text) == ListenAddress(host, port)


@pytest.mark.parametrize(
    "text",
    ["nowhere", "127.0.0.1:", ":http", "127.0.0.1:65536", "::1:9797", "[::1:9797", "[a]b]:1"],
    ids=["no-port", "empty-port", "named-port", "port-too-big", "ipv6-unbracketed",
         "bracket-unclosed", "stray-bracket"],
)  # fmt: skip
def test_bad_listen_address_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="listen address") as raised:
        parse_listen_address(text)
    assert repr(text) in str(raised.value)


def test_every_interface_accepts_ipv4_and_ipv6_on_one_port() -> None:
    with bind(parse_listen_address(":0")) as server:
        port = server.getsockname()[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as client:
                client.connect((host, port))
                accepted, _ = server.accept()
                accepted.close()


def test_busy_port_is_a_listen_error_and_nothing_stays_bound() -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as probe:
        first_port = probe.getsockname()[1]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: "):
            bind_all([ListenAddress("::1", first_port), ListenAddress("127.0.0.1", port)])
    # The first address was bound, then closed again when the second failed.
    bind(ListenAddress("::1", first_port)).close()

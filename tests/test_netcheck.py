"""Dataset URL checks against server-side request forgery (no DNS involved)."""

from __future__ import annotations

import ipaddress

import pytest

from kaito_core.netcheck import MSG_LOCAL, MSG_PRIVATE, MSG_SCHEME, data_url_problem, forbidden_address_reason, parse_ipv4_lenient


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train.parquet?download=true",
        "http://example.com/data.json",
        "HTTPS://EXAMPLE.COM/x",
        "https://8.8.8.8/x",
        "https://[2001:4860:4860::8888]/x",
        "https://deadbeef.example/x",
    ],
)
def test_allowed(url: str) -> None:
    assert data_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "message", "detail"),
    [
        ("ftp://example.com/x", MSG_SCHEME, "uses scheme ftp"),
        ("file:///etc/passwd", MSG_SCHEME, "uses scheme file"),
        ("example.com/data.json", MSG_SCHEME, "uses scheme none"),
        ("http:///path", MSG_SCHEME, "has no host"),
        ("http://example.com:99999/", MSG_SCHEME, "not a valid URL"),
        ("http://localhost/x", MSG_LOCAL, "localhost"),
        ("http://LOCALHOST./x", MSG_LOCAL, "localhost"),
        ("http://foo.localhost/x", MSG_LOCAL, "foo.localhost"),
        ("http://metadata.google.internal/", MSG_LOCAL, "metadata.google.internal"),
        ("http://instance-data.ec2.internal/", MSG_LOCAL, "instance-data"),
        ("http://kubernetes.default.svc/api", MSG_LOCAL, "kubernetes.default.svc"),
        ("http://minio.data.svc.cluster.local:9000/x", MSG_LOCAL, "cluster.local"),
        ("http://127.0.0.1/", MSG_PRIVATE, "127.0.0.1 is loopback"),
        ("http://2130706433/", MSG_PRIVATE, "127.0.0.1 is loopback"),
        ("http://0x7f000001/", MSG_PRIVATE, "127.0.0.1 is loopback"),
        ("http://0177.0.0.1/", MSG_PRIVATE, "127.0.0.1 is loopback"),
        ("http://127.1/", MSG_PRIVATE, "127.0.0.1 is loopback"),
        ("http://0.0.0.0:8080/", MSG_PRIVATE, "0.0.0.0"),
        ("http://10.1.2.3/", MSG_PRIVATE, "10.1.2.3 is private"),
        ("http://192.168.0.1/", MSG_PRIVATE, "private"),
        ("http://172.16.5.4/", MSG_PRIVATE, "private"),
        ("http://169.254.169.254/latest/meta-data", MSG_PRIVATE, "link-local"),
        ("http://100.64.0.1/", MSG_PRIVATE, "not globally routable"),
        ("http://168.63.129.16/machine", MSG_PRIVATE, "metadata/control endpoint"),
        ("http://[::1]/", MSG_PRIVATE, "::1 is loopback"),
        ("http://[fe80::1]/", MSG_PRIVATE, "link-local"),
        ("http://[fd00:ec2::254]/", MSG_PRIVATE, "private"),
        ("http://[::ffff:127.0.0.1]/", MSG_PRIVATE, "embeds 127.0.0.1 is loopback"),
        ("http://[::ffff:169.254.169.254]/", MSG_PRIVATE, "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", MSG_PRIVATE, "embeds 169.254.169.254 is link-local"),
        ("http://[2002:7f00:1::]/", MSG_PRIVATE, "embeds 127.0.0.1"),
    ],
)
def test_refused(url: str, message: str, detail: str) -> None:
    problem = data_url_problem(url)
    assert problem is not None, url
    assert problem[0] == message
    assert detail in problem[1]


def test_lenient_ipv4_parsing() -> None:
    assert parse_ipv4_lenient("2130706433") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_ipv4_lenient("10.1") == ipaddress.IPv4Address("10.0.0.1")
    assert parse_ipv4_lenient("192.168.257") == ipaddress.IPv4Address("192.168.1.1")
    assert parse_ipv4_lenient("256.1.1.1") is None
    assert parse_ipv4_lenient("1.2.3.4.5") is None
    assert parse_ipv4_lenient("08.1.1.1") is None  # 8 is not an octal digit


def test_the_downloader_can_recheck_resolved_addresses() -> None:
    assert forbidden_address_reason(ipaddress.ip_address("140.82.112.3")) is None
    assert forbidden_address_reason(ipaddress.ip_address("10.0.0.1")) == "10.0.0.1 is private"

"""The embedded Spark session: reachable from this machine only."""
from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit


def test_embedded_spark_listens_on_loopback_only(spark):
    hosts = {spark.conf.get("spark.driver.host"), urlsplit(spark.sparkContext.uiWebUrl).hostname}
    for host in hosts:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        assert addresses and all(ipaddress.ip_address(address).is_loopback for address in addresses), (host, addresses)


def test_loopback_only_is_set_while_the_jvm_starts_and_a_users_choice_wins(monkeypatch):
    from jobs.session import listening_on_loopback

    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    with listening_on_loopback():
        assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert "SPARK_LOCAL_IP" not in os.environ  # a later cluster session in this process is not bound to loopback
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")
    with listening_on_loopback():
        assert os.environ["SPARK_LOCAL_IP"] == "10.1.2.3"
    assert os.environ["SPARK_LOCAL_IP"] == "10.1.2.3"

"""The embedded Spark session: reachable from this machine only."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def test_embedded_spark_listens_on_loopback_only(spark):
    hosts = {spark.conf.get("spark.driver.host"), urlsplit(spark.sparkContext.uiWebUrl).hostname}
    for host in hosts:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        assert addresses and all(ipaddress.ip_address(address).is_loopback for address in addresses), (host, addresses)

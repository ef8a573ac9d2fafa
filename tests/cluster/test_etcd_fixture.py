"""The `etcd` fixture is a real etcd: keys put through etcd3gw read back, a key bound to a lease
goes when the lease expires, and the data outlives a restart (clean or kill -9)."""
from __future__ import annotations

from tests.framework.etcd import Etcd
from tests.framework.harness import wait_until


def test_put_get_lease_expiry_and_restart(etcd: Etcd) -> None:
    client = etcd.client()
    assert etcd.url == f"http://127.0.0.1:{etcd.port}"
    assert client.put("/roost/test/kept", "v1")
    assert client.get("/roost/test/kept") == [b"v1"]

    lease = client.lease(ttl=2)
    assert client.put("/roost/test/leased", "gone soon", lease=lease)
    assert client.get("/roost/test/leased") == [b"gone soon"]
    wait_until(lambda: client.get("/roost/test/leased") == [], timeout=6, interval=0.1,
               what="the leased key to go with its lease")

    etcd.restart()
    assert etcd.client().get("/roost/test/kept") == [b"v1"]
    etcd.kill9()
    etcd.restart()
    assert etcd.client().get("/roost/test/kept") == [b"v1"]
    assert etcd.client().get("/roost/test/leased") == []

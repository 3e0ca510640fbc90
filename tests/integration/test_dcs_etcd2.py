"""The etcd v2 backend against a real etcd on loopback: layout, atomicity, failover."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from urllib.parse import quote, urlsplit

import etcd as etcd_client
import pytest

from lab.etcd import etcd_release
from lab.util import wait_until
from yaim.dcs import DCS

A = ipaddress.ip_address("198.51.100.100")
B = ipaddress.ip_address("198.51.100.101")


DCS_TYPE = "etcd"


def test_the_release_check_warns_of_the_deprecated_v2_on_3_5_only(make, caplog):
    """etcd 3.5 deprecates v2 and 3.6 removes it: one warning at start, on 3.5 only."""
    store = make("n1")
    with caplog.at_level(logging.WARNING, logger="yaim.dcs"):
        store.check_release()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if etcd_release() != (3, 5):
        assert said == []
        return
    assert len(said) == 1, said
    assert "deprecated in 3.5" in said[0] and "yaimctl migrate" in said[0]


def test_read_sorts_the_layout(make, etcd):
    n1 = make("n1")
    assert n1.read().pool == frozenset()
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    etcd.put_dir(n1.root + "/ips/not-an-ip")
    etcd.put(n1.root + "/ips/198.51.100.102", "")
    etcd.put(n1.root + "/drain/n2", "")
    assert n1.create_mark(A)
    n1.touch_node()
    snapshot = n1.read()
    assert snapshot.pool == {"198.51.100.100", "not-an-ip"}
    assert snapshot.malformed == {"198.51.100.102": "a plain key, not a directory"}
    assert snapshot.marks["198.51.100.100"].holder == "n1"
    assert snapshot.nodes == {"n1"}
    assert snapshot.drained == {"n2"}


def test_marks_are_atomic_and_only_the_holder_refreshes_or_deletes(make, etcd):
    n1, n2 = make("n1"), make("n2")
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    assert n1.create_mark(A)
    assert not n2.create_mark(A)
    assert n1.refresh_mark(A)
    assert not n2.refresh_mark(A)
    assert not n2.delete_mark(A)
    assert n1.read().marks["198.51.100.100"][:2] == ("n1", 2)
    assert n1.delete_mark(A)
    assert not n1.refresh_mark(A)
    assert n2.create_mark(A)


def test_a_mark_never_resurrects_a_deleted_pool_entry(make, etcd):
    n1 = make("n1")
    assert not n1.create_mark(B)
    assert "198.51.100.101" not in n1.read().pool
    assert etcd.get(n1.root + "/ips/198.51.100.101") is None


def test_mark_and_node_key_expire_without_refresh(make, etcd):
    n1 = make("n1")
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    assert n1.create_mark(A)
    n1.touch_node()
    started = time.monotonic()
    wait_until(lambda: not n1.read().marks and not n1.read().nodes, timeout=5, what="expiry")
    assert time.monotonic() - started >= 0.5
    assert "198.51.100.100" in n1.read().pool


def test_node_key_refresh_keeps_it_and_delete_removes_it(make):
    n1 = make("n1")
    for _ in range(3):
        n1.touch_node()
    assert n1.read().nodes == {"n1"}
    n1.delete_node()
    n1.delete_node()
    assert n1.read().nodes == frozenset()


# A late copy of a request: etcd v2 fixes a TTL's expiration when a member receives the
# request, and a request that timed out at a hung member (SIGSTOP in the chaos run) was
# still applied seconds later, after its retry had succeeded. Its expiration was the
# older one: every node key went back ~3 s and expired, every node released all its
# addresses ("not healthy"), and a mark could expire under its holder. A copy of the
# request, replayed with a shorter TTL (an expiration a second earlier), stands in for it.


def recording(monkeypatch):
    """Record the keyword arguments of every python-etcd write and delete."""
    sent = []
    for name in ("write", "delete"):
        real = getattr(etcd_client.Client, name)

        def spy(self, key, *args, _real=real, _name=name, **kwargs):
            sent.append((_name, key, args, dict(kwargs)))
            return _real(self, key, *args, **kwargs)

        monkeypatch.setattr(etcd_client.Client, name, spy)
    return sent


def replay(etcd, request, **changes):
    """Send a recorded request again, as the hung member would have."""
    name, key, args, kwargs = request
    url = urlsplit(etcd.endpoints[0])
    client = etcd_client.Client(host=url.hostname, port=url.port)
    return getattr(client, name)(key, *args, **{**kwargs, **changes})


def test_a_late_copy_of_a_refresh_cannot_shorten_a_mark_or_a_node_key(make, etcd, monkeypatch):
    n1 = make("n1")
    make.add_pool(A)
    sent = recording(monkeypatch)
    assert n1.create_mark(A)
    n1.touch_node()
    n1.touch_node()
    assert n1.refresh_mark(A)
    first = {}
    for request in sent:
        if request[3].get("refresh"):
            first.setdefault(request[1], request)
    assert n1.refresh_mark(A)
    n1.touch_node()
    for key in (f"{make.root}/ips/{A}/marked", f"{make.root}/nodes/n1"):
        with pytest.raises(etcd_client.EtcdCompareFailed):
            replay(etcd, first[key], ttl=1)
        assert etcd.get(key)["ttl"] == 2


def test_a_late_copy_of_a_delete_cannot_delete_the_mark_made_since(make, etcd, monkeypatch):
    n1 = make("n1")
    make.add_pool(A)
    sent = recording(monkeypatch)
    assert n1.create_mark(A)
    assert n1.delete_mark(A)
    [delete] = [request for request in sent if request[0] == "delete"]
    assert n1.create_mark(A)
    with pytest.raises(etcd_client.EtcdCompareFailed):
        replay(etcd, delete)
    assert n1.read().marks[str(A)].holder == "n1"


@pytest.mark.parametrize("hostile", ["n1?recursive=true&x=", "n1#x", "n1%2fx", "n1&dir=true"])
def test_a_name_that_got_past_the_checks_is_one_quoted_key(make, etcd, hostile):
    """The second wall: python-etcd puts keys into URLs as they are; yaim quotes them,
    so a name can only ever name its own key, never a query or another key."""
    one, two = make("n1"), make("n2")
    one.touch_node()
    two.touch_node()
    two.drain("n2")
    store = make("n3")
    store.node = hostile  # as if the config had let it through
    store.touch_node()
    assert etcd.get(f"{make.root}/nodes/{quote(hostile, safe='')}") is not None
    store.delete_node()
    assert store.undrain(hostile) is False
    snapshot = one.read()
    assert snapshot.nodes == {"n1", "n2"} and snapshot.drained == {"n2"}


@pytest.mark.parametrize("hostile", ["..", ".", "a/../..", ""])
def test_a_key_with_a_dot_component_is_refused_before_it_is_sent(make, hostile, requests_made):
    store = make("n1")
    sent = requests_made()
    with pytest.raises(ValueError):
        store.undrain(hostile)
    assert requests_made() == sent


class Relay:
    """A TCP relay on loopback to etcd that holds each piece a client sends (a request is
    its headers, then its body) DELAY s before it passes it on: etcd as far away as a
    member across a LAN that syncs its disk, where loopback's round trip is mostly the
    client's own CPU."""

    DELAY = 0.001

    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for sock in (client, upstream):  # each piece as it comes, as a router passes it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, sink, delay in ((client, upstream, self.DELAY), (upstream, client, 0)):
                threading.Thread(target=self._pump, args=(source, sink, delay), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                time.sleep(delay)  # the latency being simulated, not a synchronisation
                sink.sendall(data)

    def close(self) -> None:
        """Shut every socket down first: that wakes the threads blocked on them."""
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def far_etcd(etcd):
    relay = Relay(etcd.endpoints[0])
    yield relay
    relay.close()


def test_a_round_s_refreshes_go_out_together_not_one_round_trip_each(make, far_etcd):
    """v2 keeps one TTL per mark, so one request per mark per interval: sent a few at
    once (REFRESH_WIDTH connections), 300 marks take far less than 300 round trips."""
    n1 = make("n1", endpoints=[far_etcd.url], ttl=60000)  # none expires meanwhile
    addresses = [ipaddress.ip_address("198.51.100.0") + i for i in range(300)]
    for address in addresses:
        assert n1.add_address(address) and n1.create_mark(address)
    started = time.monotonic()
    one_by_one = DCS.refresh_marks(n1, addresses)
    sequential = time.monotonic() - started
    started = time.monotonic()
    together = n1.refresh_marks(addresses)
    pooled = time.monotonic() - started
    trip = sequential / len(addresses)
    print(
        f"300 v2 refreshes, {1000 * Relay.DELAY:.0f} ms added per piece: {sequential:.3f} s"
        f" one after the other ({1000 * trip:.2f} ms a round trip), {pooled:.3f} s pooled"
        f" ({pooled / trip:.0f} round trips)"
    )
    assert list(together) == addresses and all(ok for ok, _ in together.values())
    assert all(ok for ok, _ in one_by_one.values())
    assert len({sent_at for _, sent_at in together.values()}) == len(addresses)
    assert pooled < 0.5 * sequential, (pooled, sequential)
    theirs = make("n2", endpoints=[far_etcd.url]).refresh_marks(addresses[:20])
    assert list(theirs) == addresses[:20] and not any(ok for ok, _ in theirs.values())

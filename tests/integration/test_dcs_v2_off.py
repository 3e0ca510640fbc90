"""dcs-type etcd against a real etcd that serves no v2 API (3.4/3.5 without --enable-v2):
one ERROR that names the server and the way out, kept as the store's problem."""

import logging

import pytest

from lab.etcd import EtcdCluster
from yaim.errors import DCSError

DCS_TYPE = "etcd"


@pytest.fixture
def etcd():
    with EtcdCluster(size=1, v2=False) as cluster:
        yield cluster


def test_a_server_without_v2_is_named_once_and_kept_as_the_problem(make, etcd, caplog):
    store = make()
    with caplog.at_level(logging.ERROR, logger="yaim.dcs"):
        store.check_release()
        with pytest.raises(DCSError):
            store.list_entries()
        store.clone().check_release()  # another thread's handle says nothing new
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(said) == 1, said
    for part in (etcd.endpoints[0], "no v2 API", "3.6", "dcs-type: etcd3", "yaimctl migrate"):
        assert part in said[0]
    assert store.problem == said[0]

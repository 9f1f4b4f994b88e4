"""Integration fixtures: a self-signed CA for TLS tests, a Dask cluster for partitioned runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from integration_helpers import Certs, ClientCert, make_certs, make_client_cert


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA made for this run and a server certificate for 127.0.0.1 signed by it."""
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def client_cert(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> ClientCert:
    """A client certificate signed by the test CA (for mutual TLS)."""
    return make_client_cert(certs, tmp_path_factory.mktemp("tls-client"))


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A second, unrelated CA: a client trusting only it must refuse the test server."""
    return make_certs(tmp_path_factory.mktemp("tls-other"))


@pytest.fixture(scope="session")
def cluster2() -> Iterator[Any]:
    """A ``LocalCluster`` of 2 single-threaded worker processes on 127.0.0.1, shared by the
    partitioned-run tests of every broker (those that kill or scale workers start their own)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster

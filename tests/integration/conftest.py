"""Integration fixtures: a self-signed CA for TLS tests."""

from __future__ import annotations

import pytest
from integration_helpers import Certs, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA made for this run and a server certificate for 127.0.0.1 signed by it."""
    return make_certs(tmp_path_factory.mktemp("tls"))

"""A TLS file that cannot be read is a clear ConfigError naming it, for every network source
and sink (it was a bare FileNotFoundError from the ssl module), raised when the node is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import rtnb

EXAMPLE = {"t": "datetime64[ns]", "x": "float64"}
MISSING = "/no/such/dir/ca.pem"


def frame() -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                                             "x": pd.Series([], dtype=float)}), time="t")


SOURCES: dict[str, Callable[..., Any]] = {
    "redis_stream": lambda **tls: rtnb.sources.redis_stream("s", example=EXAMPLE, **tls),
    "websocket": lambda **tls: rtnb.sources.websocket("wss://127.0.0.1:1/x", example=EXAMPLE,
                                                      **tls),
    "sse": lambda **tls: rtnb.sources.sse("https://127.0.0.1:1/x", example=EXAMPLE, **tls),
    "nats": lambda **tls: rtnb.sources.nats("s", "tls://127.0.0.1:1", example=EXAMPLE, **tls),
    "mqtt": lambda **tls: rtnb.sources.mqtt("t", "mqtts://127.0.0.1:1", example=EXAMPLE,
                                            **tls),
    "amqp": lambda **tls: rtnb.sources.amqp("amqps://127.0.0.1:1", queue="q",
                                            example=EXAMPLE, **tls),
    "to_nats": lambda **tls: rtnb.sinks.to_nats(frame(), "s", "tls://127.0.0.1:1", **tls),
    "to_mqtt": lambda **tls: rtnb.sinks.to_mqtt(frame(), "t", "mqtts://127.0.0.1:1", **tls),
    "to_amqp": lambda **tls: rtnb.sinks.to_amqp(frame(), "amqps://127.0.0.1:1", routing_key="r",
                                                **tls),
    "to_webhook": lambda **tls: rtnb.sinks.to_webhook(frame(), "https://127.0.0.1:1/x", **tls),
}


@pytest.mark.parametrize("build", list(SOURCES.values()), ids=list(SOURCES))
def test_a_missing_ca_file_is_a_config_error_naming_it(build: Callable[..., Any]) -> None:
    with pytest.raises(rtnb.ConfigError, match=f"the TLS CA file '{MISSING}' could not be read"):
        build(ca=MISSING)


@pytest.mark.parametrize("kind", ["redis_stream", "websocket", "sse", "nats", "mqtt", "amqp"])
def test_a_source_names_itself_in_the_error(kind: str) -> None:
    with pytest.raises(rtnb.ConfigError, match=f"^{kind} '[a-z_]+': the TLS CA file"):
        SOURCES[kind](ca=MISSING)


def test_a_bad_client_certificate_is_a_config_error_naming_it(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not a certificate")
    with pytest.raises(rtnb.ConfigError, match=r"TLS client certificate .*client\.pem.* could not"):
        SOURCES["redis_stream"](tls=True, cert=str(cert))

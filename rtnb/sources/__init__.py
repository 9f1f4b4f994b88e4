"""Sources: where micro-batches come from. Tab-complete ``rtnb.sources.`` for the catalogue.

Every source returns a root :class:`~rtnb.StreamingFrame`; ``start()`` runs it on the
notebook's loop, ``run()`` in a script. Message sources decode, check and coerce records to
the frame's ``example`` schema, send what does not fit to ``frame.dead_letters`` with the raw
payload, cut micro-batches at ``max_batch`` records or ``max_delay``, and reconnect with
exponential backoff and jitter. Broker clients are optional extras (``pip install
rtnb[redis]``); a missing one raises :class:`~rtnb.MissingExtraError` naming the extra.

The options the message sources share (decoding, batching, backpressure, limits, the
watermark guard, TLS) are documented once, on :class:`SourceOptions` and :class:`TlsOptions`.
"""

from rtnb import _record
from rtnb.sources._amqp import amqp
from rtnb.sources._hybrid import hybrid
from rtnb.sources._kafka import kafka
from rtnb.sources._mqtt import mqtt
from rtnb.sources._nats import nats
from rtnb.sources._options import SourceOptions, TlsOptions
from rtnb.sources._prometheus import prometheus, scrape
from rtnb.sources._redis import redis_stream
from rtnb.sources._replay import replay
from rtnb.sources._sse import sse
from rtnb.sources._tail import tail
from rtnb.sources._websocket import websocket
from rtnb.sources.base import Source

# Each source call is recorded on the frame it returns, so a pipeline can be exported as code.
amqp = _record.function(amqp)
hybrid = _record.function(hybrid)
kafka = _record.function(kafka)
mqtt = _record.function(mqtt)
nats = _record.function(nats)
prometheus = _record.function(prometheus)
redis_stream = _record.function(redis_stream)
replay = _record.function(replay)
scrape = _record.function(scrape)
sse = _record.function(sse)
tail = _record.function(tail)
websocket = _record.function(websocket)

__all__ = ["Source", "SourceOptions", "TlsOptions", "amqp", "hybrid", "kafka", "mqtt", "nats",
           "prometheus", "redis_stream", "replay", "scrape", "sse", "tail", "websocket"]

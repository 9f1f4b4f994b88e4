"""Sinks: where results go. Each subscribes to a frame and delivers its batches in order.

Network sinks retry with exponential backoff and jitter and sit behind a circuit breaker;
what cannot be delivered is spooled to disk (``spool=``) or counted; a sink that falls behind
(``max_queue`` batches queued) makes the pipeline's sources wait.
"""

from rtnb import _record
from rtnb.sinks._core import CircuitBreaker, Sink, SinkStats
from rtnb.sinks._kafka import to_kafka
from rtnb.sinks.brokers import to_amqp, to_mqtt, to_nats
from rtnb.sinks.targets import to_log, to_parquet, to_redis_stream, to_webhook

# Each sink call is recorded on the sink it returns, so a pipeline can be exported as code.
to_amqp = _record.function(to_amqp)
to_kafka = _record.function(to_kafka)
to_log = _record.function(to_log)
to_mqtt = _record.function(to_mqtt)
to_nats = _record.function(to_nats)
to_parquet = _record.function(to_parquet)
to_redis_stream = _record.function(to_redis_stream)
to_webhook = _record.function(to_webhook)

__all__ = ["CircuitBreaker", "Sink", "SinkStats", "to_amqp", "to_kafka", "to_log", "to_mqtt",
           "to_nats", "to_parquet", "to_redis_stream", "to_webhook"]

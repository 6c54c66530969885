"""Kafka topics as an iterable dataset: ``KafkaStream``, with offsets as its checkpoints.

How it fits together: ``decode`` (message values -> Arrow, a poll batch at a time), ``client``
(consumers per process, metadata calls, start/end offsets: NOTE [ Kafka clients and fork ]),
``reader`` (one shard's consumer: NOTE [ Kafka offsets as stream positions ]), ``stream``
(:class:`KafkaStream`), ``windows`` (per-key sliding windows over a stream) and ``mock``
(librdkafka's mock cluster in a helper process, ``mock_broker``: for tests, the demo and the
benchmark).
"""

from .reader import KafkaStats
from .stream import KafkaStream
from .windows import KafkaWindows

__all__ = ["KafkaStats", "KafkaStream", "KafkaWindows"]

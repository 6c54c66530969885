"""Kafka topics: ``KafkaStream`` (an iterable dataset with offsets as checkpoints) and its windows."""

from .reader import KafkaStats
from .stream import KafkaStream
from .windows import KafkaWindows

__all__ = ["KafkaStats", "KafkaStream", "KafkaWindows"]

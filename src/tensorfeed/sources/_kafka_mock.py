"""The old home of the Kafka mock cluster, kept for the imports in docs, examples and benchmarks:
``from tensorfeed.sources._kafka_mock import MockCluster``. It lives in ``kafka/mock.py``."""

from .kafka.mock import MockCluster

__all__ = ["MockCluster"]

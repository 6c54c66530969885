"""URL scheme -> source class, imported lazily (fsspec-style registry with install hints).

``tfd.open("postgresql://u:pw@host/db?table=orders&key=order_id")`` finds the SQL source;
``s3://`` and local paths find the lake; ``kafka://host:9092/topic`` finds Kafka. Each class
implements ``from_url(url, **options)``; options in the URL's query string are the class's own.
"""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

# scheme -> ("module:Class", extra that provides its driver, or None)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "sqlite": ("tensorfeed.sources.sql:SQLDataset", None),
    "postgresql": ("tensorfeed.sources.sql:SQLDataset", "postgres"),
    "postgres": ("tensorfeed.sources.sql:SQLDataset", "postgres"),
    "s3": ("tensorfeed.sources.lake:LakeDataset", None),
    "file": ("tensorfeed.sources.lake:LakeDataset", None),
    "kafka": ("tensorfeed.sources.kafka:KafkaStream", "kafka"),
    "imagefolder": ("tensorfeed.sources.files:ImageFolder", "images"),
    "annotations": ("tensorfeed.sources.files:AnnotationsDataset", "images"),
    "mnist": ("tensorfeed.sources.files:MNIST", None),
    "fashion-mnist": ("tensorfeed.sources.files:FashionMNIST", None),
}


def scheme_of(url: str) -> str:
    """The registry scheme of ``url``: ``postgresql+psycopg`` -> ``postgresql``; a plain path -> file."""
    if os.path.exists(url) or "://" not in url:
        return "file"
    return urlsplit(url).scheme.split("+", 1)[0].lower()


def resolve(url: str) -> type[Any]:
    """The dataset class for ``url`` (imported on demand)."""
    scheme = scheme_of(url)
    entry = _REGISTRY.get(scheme)
    if entry is None:
        raise ConfigError(
            f"unsupported URL scheme {scheme!r}; tensorfeed opens: {', '.join(sorted(_REGISTRY))}"
        )
    module, _, cls = entry[0].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def open(url: str, **options: Any) -> Any:
    """Open ``url`` as a tensorfeed dataset, dispatching on its scheme."""
    return resolve(url).from_url(url, **options)

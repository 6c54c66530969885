"""Data lakes: Parquet (first class), CSV and newline-delimited JSON, on local disk or S3.

``tfd.LakeDataset("s3://lake/patients/", filter=[("year", ">=", 2022)])`` is a map-style dataset
whose ``len()`` and ``ds[i]`` come from file and row-group metadata; ``tfd.LakeStream(...)`` is the
same lake as an iterable dataset, split by row group across DataLoader workers and DDP ranks.

How it fits together, from the bottom up (each NOTE is in the module named):
- ``fs``: URIs, ``storage_options`` -> ``pyarrow.fs.S3FileSystem``, listings, the identity
  pinned per file, bounded retries (NOTE [ S3 retries are bounded in time ]).
- ``plan``: ``LakeSpec`` (what to read) and ``Plan`` (one epoch; NOTE [ A consistent epoch ]).
- ``pruning``, ``schema``, ``formats``: partitions and filters, the unified schema
  (NOTE [ Schema unification ]), what one Parquet footer or CSV/JSON file tells us.
- ``index``: building the plan of an epoch (NOTE [ How the lake index is built ]).
- ``read``: reading one row group, checked against the pinned identity; read-ahead.
- ``sampler``: the locality-aware shuffle (NOTE [ How random is the locality shuffle ]).
- ``gather``, ``dataset``, ``stream``: the map-style :class:`LakeDataset` (batches gathered from
  decoded row groups) and the iterable :class:`LakeStream`.
"""

from .dataset import LakeDataset
from .sampler import LocalitySampler
from .stream import LakeStream

__all__ = ["LakeDataset", "LakeStream", "LocalitySampler"]

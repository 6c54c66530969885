"""Data lakes (Parquet, CSV, JSON; local or S3): ``LakeDataset`` (map-style) and ``LakeStream``."""

from .dataset import LakeDataset, LakeStream
from .sampler import LocalitySampler

__all__ = ["LakeDataset", "LakeStream", "LocalitySampler"]

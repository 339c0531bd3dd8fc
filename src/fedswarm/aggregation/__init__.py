"""Aggregation rules: pure functions over an (n, d) matrix of members' updates.

The weighted mean is FedAvg's rule; the others are Byzantine-robust (each module names its paper and
refuses settings outside its assumptions); bucketing averages random small groups of updates in front of
any of them. FedOpt's server steps are in :mod:`fedswarm.aggregation.fedopt`.
"""

from fedswarm.aggregation.bucketing import bucket_means, bucket_split
from fedswarm.aggregation.bulyan import bulyan, bulyan_select
from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.aggregation.fedopt import fedopt_step
from fedswarm.aggregation.fltrust import fltrust
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum, krum_select, multi_krum
from fedswarm.aggregation.mean import weighted_mean
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trim_count, trimmed_mean

__all__ = [
    "bucket_means",
    "bucket_split",
    "bulyan",
    "bulyan_select",
    "centered_clipping",
    "clipped_mean",
    "fedopt_step",
    "fltrust",
    "geometric_median",
    "krum",
    "krum_select",
    "median",
    "multi_krum",
    "trim_count",
    "trimmed_mean",
    "weighted_mean",
]

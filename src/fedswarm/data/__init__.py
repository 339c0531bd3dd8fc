"""The data layer: built-in datasets, table loading, partitioners and a federation's data view."""

from fedswarm.data.datasets import ArrayDataset, dataset_names, load_dataset
from fedswarm.data.federated import FederatedData, build_federated_data
from fedswarm.data.loaders import load_table
from fedswarm.data.partition import Partition, SampledPartition

__all__ = [
    "ArrayDataset",
    "FederatedData",
    "Partition",
    "SampledPartition",
    "build_federated_data",
    "dataset_names",
    "load_dataset",
    "load_table",
]

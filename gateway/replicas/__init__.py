"""Several gateway replicas as one: the cluster loop that shares arrivals, members, the
plan and the function's concurrency (`Cluster`), through a state store (`StateStore`:
in memory for one replica, `RedisState` for many). The budget split every replica
computes alike is pure and lives in `scheduler.budget`."""

from .cluster import RATE_WINDOW_S, Cluster, ClusterModel, default_replica_id
from .state import MemoryState, StateStore, StateUnavailable

__all__ = ["RATE_WINDOW_S", "Cluster", "ClusterModel", "MemoryState", "StateStore", "StateUnavailable", "default_replica_id"]

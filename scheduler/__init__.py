"""Placement of batches and planning of pools.

Like `batching/`, nothing here does I/O or reads a clock.
"""

from .placement import InstanceState, pick_instance

__all__ = ["InstanceState", "pick_instance"]

"""Shared core of pounce-layers: native POUNCE solves and the Torch KKT backward."""

from pounce_kkt import _native

__all__ = ["_native"]

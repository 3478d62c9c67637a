"""Steering vectors in every peer tool's file format, read into one `VectorSet` (layer L = the
output of decoder block L) and written back out."""

from __future__ import annotations

from harness.vectors.base import UNKNOWN_LAYER, VectorSet, describe
from harness.vectors.read import read_vectors
from harness.vectors.write import convert, write_gguf, write_lm_eval, write_safetensors

__all__ = ["UNKNOWN_LAYER", "VectorSet", "convert", "describe", "read_vectors", "write_gguf", "write_lm_eval",
           "write_safetensors"]

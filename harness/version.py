"""The harness's version, recorded in every run.json."""

__version__ = "0.2.0"

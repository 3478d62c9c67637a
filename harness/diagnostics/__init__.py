"""Diagnostics of a steering beyond its task: off-target cost on neutral text, topic perplexity
ratio, capability retention."""

"""Steering methods: one module each, declaring its spec and builder and registering them
(`harness.registry`). Heavy libraries are imported inside the builders, so validating a task
file never loads torch."""

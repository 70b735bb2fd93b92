"""Spark jobs: one entry point per stage, and the driver-side plumbing they share."""

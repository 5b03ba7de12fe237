"""Cluster files: Ray launcher YAML, KubeRay RayJob, runtime env and local start scripts."""

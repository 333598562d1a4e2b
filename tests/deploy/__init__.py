"""Deployment tests: Compose files, Dockerfiles, scripts, quickstart, README; containers on podman."""

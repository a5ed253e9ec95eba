"""Environments: conda specs, their locks, installs and the one fingerprint that names them everywhere."""

"""Shared test machinery: real processes, namespaces, simulated nodes."""

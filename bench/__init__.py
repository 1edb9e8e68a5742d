"""Benchmarks of a real coordinator driven by real gRPC clients (see README)."""

"""The node daemon: links the device and keeps its WireGuard in step."""

__version__ = "0.1.0"

"""The WireGuard layer of meshd: device values, planning, and the backends.

- `device`: the values (`PeerConfig`, `DeviceState`) and operations.
- `reconcile`: `plan(desired, actual)`, the smallest list of operations.
- `backend`: the `WireGuardBackend` interface the daemon's loops use.
- `userspace`: that interface over wireguard-go, via `uapi` and `netconf`.
- `kernel`: that interface over the Linux module, via generic netlink and
  `netconf`; `kernel_available()` says whether this kernel has it.

Errors: `WireGuardError` (backend) is the root of everything the data plane
can do wrong at run time (`UapiError`, `LinkError`, `WireGuardGoError`,
`KernelDeviceError` and its `KernelModuleMissing`); the apply loop backs off
and retries those. Bad input is a `ValueError` (`InvalidKey`,
`OverlappingAllowedIPs`) and retrying it changes nothing.
"""

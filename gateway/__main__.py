"""``python -m gateway``: the same as the ``runmesh-gateway`` command."""

from gateway.cli import main

main()

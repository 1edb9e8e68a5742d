"""gRPC transport: servicers that decode, call the domain, encode."""

"""The REST routes, one module per resource; each route is decode, call, encode."""

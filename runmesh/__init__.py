"""Code shared by the three parts: generated stubs (``runmesh.v1``) and keys."""

"""The coordinator: the only owner of RunMesh state, served over gRPC."""

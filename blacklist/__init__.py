"""Cross-region card revocation list: the library every node is built from (no gRPC here)."""

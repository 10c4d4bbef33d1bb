"""Unit tests of the sidecar (real files, fake registry and fetcher)."""

"""Dataset loaders (filled in below)."""

"""Components: versioned, serializable objects stored in the metadata store."""

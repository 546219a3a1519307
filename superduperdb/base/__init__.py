"""The lowest layer: configuration, errors, documents and optional-dependency helpers."""

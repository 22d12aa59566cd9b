"""Shared code the stages import: params, errors, I/O, readers, exporters, MinHash."""

"""Pure conversions between the one detection type and file formats; file I/O stays in thin shells."""

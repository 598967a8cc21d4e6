"""Built-in plugin `modality_depth` (being written: registers nothing yet)."""

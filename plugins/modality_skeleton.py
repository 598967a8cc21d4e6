"""Built-in plugin `modality_skeleton` (being written: registers nothing yet)."""

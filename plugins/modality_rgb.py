"""Built-in plugin `modality_rgb` (being written: registers nothing yet)."""

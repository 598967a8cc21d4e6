"""Built-in plugin `modality_flow` (being written: registers nothing yet)."""

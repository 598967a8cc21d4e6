"""Built-in plugin `fusion_mfm` (being written: registers nothing yet)."""

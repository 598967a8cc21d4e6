"""Built-in plugin `dataset_standard` (being written: registers nothing yet)."""

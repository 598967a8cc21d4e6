"""Built-in plugin `dataset_synthetic` (being written: registers nothing yet)."""

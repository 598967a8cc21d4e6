"""Built-in plugin `distill_d2m` (being written: registers nothing yet)."""

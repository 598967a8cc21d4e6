"""Built-in plugin `distill_basic` (being written: registers nothing yet)."""

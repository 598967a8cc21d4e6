"""Built-in plugin `heads_baseline` (being written: registers nothing yet)."""

"""Built-in plugin `heads_trx` (being written: registers nothing yet)."""

"""Built-in plugin `backbones_timm` (being written: registers nothing yet)."""

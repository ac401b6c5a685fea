"""The cross-paper figures (every method on shared setups): their run grid (``runs``) and one module per figure."""

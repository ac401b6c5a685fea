"""Jupyter notebooks that show each paper's figures from the run store (see ``nbplot`` for their helpers)."""

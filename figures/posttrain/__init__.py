"""The post-training structured pruning paper's figures and tables: its run grid (``runs``) and one module per
figure."""

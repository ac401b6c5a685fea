"""Beyond the papers: measured CPU speed of sparse execution (common.sparse), and the speed of the other figures' real
pruned models as sparse exports (``exports``)."""

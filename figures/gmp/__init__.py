"""The GMP figures (Zhu & Gupta 2017, Neural Magic's GMP recipes): their run grid (``runs``) and one module per
figure."""

"""The BiP paper's figures and tables (Zhang et al. 2022): its run grid (``runs``) and one module per figure."""

"""What every method shares. Imports run one way, from a layer to those below it (bottom first):

1. ``errors`` (and ``exit_code``), ``config``, ``metrics``, ``atomic`` (atomic file writes), ``cost``;
2. ``distributed``: the ranks of a data-parallel job (torch.distributed only);
3. ``criteo``: the Criteo file format and the paper's Criteo model;
4. ``data`` (the datasets, Criteo's among them), ``models`` (the registry, ``criteo_mlp`` among them), ``sparsity``;
5. ``train``: the epoch loop, devices, determinism, checkpointed epochs;
6. ``store``: the run store; its ``execute`` runs a script above all of the above (it imports ``train`` and
   ``distributed`` when called, so reading the store needs no torch);
7. ``export``: a finished run's model for use without this repository; ``runs``: listing and removing runs;
8. ``cli``: the ``Runtime`` settings and the command line of every script;
9. ``pretrain``, ``prepare`` (a dataset read once before its runs), ``bench``: scripts and tools built on the rest;
   ``torch_index`` (standard library only: checks a PyTorch wheel index before ``make install``).
The GPU check, which runs every method and so imports the paper folders, is ``figures.gpu_check``.
"""

"""Slurm: submit runs and figures' missing runs as (requeueable) jobs; a local single-node cluster for the tests."""

"""Bring your own embeddings or scores, one module per responsibility (the commands: multimem_core.cli.imports).

embedding_files   reading and checking one model's embedding folder (npy / views / parquet)
layout            ids, roles and tables from files; the protocol layout; the staging folder a run is written in
embeddings        `multimem import-embeddings`: embeddings -> a scored run
scores            `multimem import-scores`: a table of scores -> a run
"""

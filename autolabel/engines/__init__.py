"""Where the heavy, parallel work runs: in this process (``local``) or on a Ray cluster (``ray``).

Both map the same row mappers (``proposers.base.BatchMapper``, ``sampling.scorer.PoolScorer``):
rows of ``{id, path}`` in, one result row per id out, the model built once per worker.
"""

"""Active-learning sampling: score functions over predictions, selection over scores.

* ``uncertainty``: per-box and per-image uncertainty of a student's detections (pure functions).
* ``diversity``: k-center greedy, k-means++ seeding and typicality over image embeddings (faiss).
* ``select``: the strategies (random, uncertainty, diversity, hybrid, typicality) behind one
  ``select(...)`` entry point returning an ordered batch of ids.
* ``scorer``: ``PoolScorer``, the one piece that owns a model: the student's detections, scores
  and embeddings for unlabeled images, streamed by ``score_pool``.
"""

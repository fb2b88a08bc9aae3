"""Scoring: evaluation of any model URI (:mod:`~kennel.score.evaluate`), batch prediction
in-process (:mod:`~kennel.score.batch`) and on a Dask cluster
(:mod:`~kennel.score.distributed`), one chunk at a time (:mod:`~kennel.score.chunks`)."""

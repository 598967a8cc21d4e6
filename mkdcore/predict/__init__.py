"""Few-shot prediction on new clips with a trained model folder (``mkd predict``,
``mkd support build``).

Why a package of its own: deployment reads clips the user hands over (video files or
frame folders, not a dataset layout), holds support features between queries, and runs
either the eager model or its ONNX export; none of that belongs in training.

* :mod:`.clips` reads one clip exactly as the data pipeline does (importer frame choice
  for video files, test-time ``sample_indices`` for frame folders) and finds the clips of
  a support folder (one folder per class).
* :mod:`.model` is the one adapter between a model folder (eager or ONNX export) and the
  rest: its input contract, a fingerprint, ``encode`` and ``logits``.
* :mod:`.support` computes, saves and loads support features (``support.npz``).
* :mod:`.predict` ranks classes for each query.
"""

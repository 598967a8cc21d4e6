"""Stages of a Lite-MKD experiment: each a function of (config section, inputs).

Stage outputs live in ``<runs_dir>/stages/<kind>/<key>/`` where ``key`` hashes the
config sections the stage reads and its inputs' keys, so two experiments that share
a teacher share its training and features. A finished stage is skipped only while its
provenance holds: the exact results it read, the code that made it and the data it
describes are unchanged (:mod:`mkdcore.stages.provenance`; think `make`, not a script).
"""

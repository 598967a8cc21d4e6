"""Stages of a Lite-MKD experiment: each a function of (config section, inputs).

Stage outputs live in ``<runs_dir>/stages/<kind>/<key>/`` where ``key`` hashes the
config sections the stage reads and its inputs' keys, so two experiments that share
a teacher share its training and features. A stage whose ``manifest.json`` exists is
done and skipped (think `make`, not a script).
"""

"""Evaluation: the paper's metrics and tables.

- :mod:`~apollo_jax.evaluation.metrics`: SDR, SI-SNR, LSD, ViSQOL on numpy arrays.
- :mod:`~apollo_jax.evaluation.evaluate`: degrade, restore and score a folder (``eval.py``).
- :mod:`~apollo_jax.evaluation.report`: tables and plots of the scores.
- :mod:`~apollo_jax.evaluation.nulltest`: our output against the published code's.
"""

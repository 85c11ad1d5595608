"""Prove it worked: running and freezing the success criteria (criteria), the monitors on
before/after samples (monitors), pairwise judges (judges), `eval policy` (policy, sampling)
and `eval rm` (rm), their settings (configs) and result files (schema). Import the submodule
you need; this package imports nothing heavy.
"""

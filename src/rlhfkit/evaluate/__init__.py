"""Prove it worked: success criteria and their detectors (criteria), statistics (stats),
reward-hacking monitors (monitors), pairwise judges (judges), `eval policy` (policy) and
`eval rm` (rm). Import the submodule you need; this package imports nothing heavy.
"""

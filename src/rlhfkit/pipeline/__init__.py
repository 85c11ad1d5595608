"""`rlhfkit run`: a project's whole loop from its spec (see run.py)."""

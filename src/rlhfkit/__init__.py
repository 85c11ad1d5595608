"""rlhfkit: an end-to-end RLHF workbench.

Importing the package is cheap on purpose: the CLI's ``--help`` must answer in well under a
second, so torch and transformers are imported only inside the functions that use them.
"""

__version__ = "0.1.0"

"""`python -m rlhfkit.cli`, which `accelerate launch -m rlhfkit.cli ...` uses."""

from rlhfkit.cli import main

main()

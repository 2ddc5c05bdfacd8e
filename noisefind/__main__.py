"""``python -m noisefind`` (and ``torchrun -m noisefind``) runs the CLI."""

from noisefind.cli import main

main()

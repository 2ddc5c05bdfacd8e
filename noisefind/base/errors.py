"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-line message and exit status 2; the library lets it propagate so
notebook users can catch it.
"""


class NoisefindError(ValueError):
    """Bad input or bad usage: the message names the problem and, where possible, the fix."""

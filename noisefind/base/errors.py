"""The one exception type that means "the user gave us something we cannot use".

The library raises it naming its own parameters (``limit must be at least 1``) and says which
one in :attr:`NoisefindError.parameter`; the CLI renders that name as the command's flag
(``--limit must be at least 1``), prints one line and exits with status 2. Notebook users catch
it as a ``ValueError``.
"""

from __future__ import annotations


class NoisefindError(ValueError):
    """Bad input or bad usage: the message names the problem and, where possible, the fix.

    Parameters
    ----------
    message : str
        What is wrong, in the library's words (parameter names as the Python API spells them).
    parameter : str or tuple of str, optional
        The parameter at fault, when there is one, as ``message`` writes it; several when the
        message also names the fix (``("rank_by", "cutoff")``: the first where it first
        appears, the others where they last appear).
    """

    def __init__(self, message: str, *, parameter: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.parameter = parameter

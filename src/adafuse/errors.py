"""The one exception type for user mistakes.

Anything raised as :class:`UserError` reaches the user as a single line naming the file, line or value
at fault, with a non-zero exit status; everything else is a bug and keeps its traceback. It is a
``ValueError``, so library callers that catch ``ValueError`` around constructors keep working.
"""


class UserError(ValueError):
    """A mistake in the user's input (a path, a list line, a value): reported as one line, exit code 2."""

"""The project's one error base: the CLI catches it once and prints its message (exit status 2)."""


class WaltzGateError(Exception):
    """A project error whose message is one sentence for the user."""

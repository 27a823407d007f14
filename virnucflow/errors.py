"""One error type for everything a user can fix; the CLI prints its message on one line."""


class VirnucflowError(Exception):
    """Base of every error that is the user's to fix (bad input, missing model, failed validation)."""


class InputError(VirnucflowError):
    """An input file is missing, unreadable or malformed."""


class ModelError(VirnucflowError):
    """A model or classifier cannot be found or loaded."""


class ValidationError(VirnucflowError):
    """Outputs do not account for every expected id."""

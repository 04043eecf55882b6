"""Errors that reach the user as one line: what failed, on which value, and what to do."""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can act on. `code` matches the worker protocol's error codes."""

    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ModelMissingError(UserError):
    code = "model_missing"


class ModelInvalidError(UserError):
    code = "model_invalid"


class ImageTooLargeError(UserError):
    code = "too_large"

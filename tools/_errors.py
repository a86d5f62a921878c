"""The errors of the `fieldlink` command; each maps to an exit code and a message without a traceback."""

from __future__ import annotations


class FieldlinkError(Exception):
    """Base of every error the command reports to its user."""

    exit_code = 1


class UsageError(FieldlinkError):
    """The user asked for something that cannot be done as asked (wrong input, wrong state)."""

    exit_code = 2


class EnvironmentProblem(FieldlinkError):
    """Something this machine lacks or holds: a missing program, a busy port."""

    exit_code = 3


class ServiceFailed(FieldlinkError):
    """A service we started did not come up or died."""

    exit_code = 4

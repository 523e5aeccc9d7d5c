"""Errors a user can act on: the command line prints their message in one line, without a stack trace."""


class LoopbotError(Exception):
    """A runtime failure with a message for the user (exit code 1)."""

    exit_code = 1


class UsageError(LoopbotError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """config.toml or an override is wrong; the message names the key, the value and what was expected."""


class TokenRejected(ConfigError):
    """A chat platform refused the bot token at start; the message names the variable, never the token."""

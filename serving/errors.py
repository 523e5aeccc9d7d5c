"""Typed serving errors. The bot turns each into a user-facing message; no raw HTTP error reaches a chat."""


class ServingError(Exception):
    """Base class; `user_message` is safe to show in a chat."""

    user_message = "Sorry, I can't answer right now. Please try again in a moment."


class BackendUnavailable(ServingError):
    user_message = "The model server is unreachable right now. Please try again in a minute."


class ModelNotFound(ServingError):
    user_message = "This persona's model is not loaded right now. An admin has been told."


class Overloaded(ServingError):
    user_message = "I'm answering a lot of people right now. Please try again in a few seconds."


class GenerationTimeout(ServingError):
    user_message = "That took too long, sorry. Please try again, perhaps with a shorter message."


class BadRequest(ServingError):
    user_message = "I couldn't process that message (it may be too long)."


class SwapFailed(ServingError):
    """A new adapter version could not be loaded or failed its smoke test; the old route stays."""

    user_message = "The new version of this persona could not be started; the previous one keeps answering."


class WrongBaseModel(BadRequest):
    """An adapter offered to a base model it was not trained on (its adapter_config.json names another one)."""

    user_message = "This persona's new version was trained for another model; the previous one keeps answering."

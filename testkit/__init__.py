"""Loopback stand-ins and builders shared by the tests and the benchmarks; dev-only, never in the wheel.

Here: fake Telegram Bot API, fake Discord gateway, fake vLLM, fake Mistral (chat and fine-tuning), fake LLM judge,
the instant backend, the router the composition root would build, the tiny model builder, loopback ports, a generated
WhatsApp export with its peak-memory probe.
Test-only fixtures that fill or reset a database (tests/helpers/databases.py, feedback_factory.py) stay in tests/:
no benchmark uses them. Tests import this package from the checkout (pytest's rootdir), benchmarks too (they run
from a checkout); pyproject.toml lists the wheel's packages one by one and testkit is not among them.
"""

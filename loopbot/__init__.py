"""loopbot: chat personas that get better from their users' votes every night."""

__version__ = "0.1.0"

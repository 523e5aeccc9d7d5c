"""The `loopbot` command groups, one module each with `register(app)`; core.py holds init/db/run/chat."""

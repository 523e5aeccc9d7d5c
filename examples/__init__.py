"""Sample corpora the default config seeds its personas from (installed as loopbot.examples)."""

"""`loopbot demo`: simulated users, real chat core, real training cycles; shows the bot getting better."""

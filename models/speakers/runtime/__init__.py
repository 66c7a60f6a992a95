"""What the agent runs for speaker clustering: the audio front end, voice activity, turns and on-line clusters."""

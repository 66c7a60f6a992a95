"""The speakers task plug-in: who is speaking, live, on microphone streams (turns grouped into speaker clusters)."""

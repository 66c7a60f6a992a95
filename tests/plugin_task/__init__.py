"""A small task plug-in, written as docs/adding-a-task.md says: sound level alarms on microphone streams.

Everything it needs lives in this folder; registering it is one line (``TASKS.register``).
"""

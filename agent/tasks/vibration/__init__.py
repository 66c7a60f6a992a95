"""The vibration task plug-in: condition monitoring of rotating machines (config, events, demo pumps, commands)."""

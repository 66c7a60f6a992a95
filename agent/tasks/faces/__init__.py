"""The faces task plug-in (planned): for now only its gallery command; the Task class comes with the detector."""

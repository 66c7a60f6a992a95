"""The faces task plug-in: faces at a camera tracked, embedded and matched against an encrypted gallery."""

"""Mail-specific code shared by the daemons: addresses, frames, ipc, control files, paths."""

"""Control: the global hotkey, Unix signals and the control socket."""

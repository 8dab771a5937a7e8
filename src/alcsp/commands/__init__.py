"""One module per ``alcsp`` sub-command (see ``alcsp.cli``)."""

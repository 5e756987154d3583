"""What buildonce asks of git: the object ids of a checked-out work tree, read with git's own commands."""

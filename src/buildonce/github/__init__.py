"""What buildonce asks of GitHub: the workflow commands and files of the runner, and the event context."""

"""What buildonce asks of Docker: the CLI's configuration, the engine (through the SDK) and buildx."""

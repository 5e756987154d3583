"""What buildonce asks of registries: the Distribution API client, its HTTP transport, and registry auth."""

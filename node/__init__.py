"""The node process: config, servers, CLI."""

"""The subcommands of the weightpress command line (see weightpress.cli)."""

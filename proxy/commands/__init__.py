"""The CLI's subcommands: they print for humans and return exit codes; only cli.py parses argv."""

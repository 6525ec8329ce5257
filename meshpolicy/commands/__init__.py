"""One module per `meshc` subcommand; shared options live in common.py."""

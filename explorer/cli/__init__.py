"""The command line, one module per command: each `add`s its parser and runs it."""

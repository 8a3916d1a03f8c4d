"""The commands behind `connector` (see `connector.cli` for the parser).

One module per group of commands, each imported only when its command runs: a command pays
for what it uses (the database driver, the HTTP client, rich's progress bar) and no more.
"""

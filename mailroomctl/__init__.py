"""mailroomctl: the operators' command-line tool, a client of the /admin API.

It talks HTTP to a running Mailroom (the local runner or a deployed stack), so
the CLI and the admin API can never disagree about what an operation does.
"""

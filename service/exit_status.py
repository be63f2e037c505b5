"""The exit statuses of `upload-service run`, with what each means (shown by `--help` and
docs/configuration.md)."""

EXIT_CUT_SHORT = 1  # a second stop signal ended the graceful stop
EXIT_CONFIG = 2
EXIT_LISTEN = 3
EXIT_STATUSES = {
    0: "stopped by SIGTERM or SIGINT",
    EXIT_CUT_SHORT: "stopped at once by a second SIGTERM or SIGINT during the graceful stop "
    "(the last log line says what was cut short)",
    EXIT_CONFIG: "a setting is missing or invalid (the message names every problem)",
    EXIT_LISTEN: "the service cannot listen on HOST:PORT or HOST:METRICS_PORT (port in use, "
    "address not on this machine, no permission)",
}

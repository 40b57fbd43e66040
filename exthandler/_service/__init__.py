"""exthandler as a system service: its configuration file, sd_notify, and its logs."""

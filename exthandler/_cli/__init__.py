"""The command line: argument parsing, printing, goal-file editing and progress."""

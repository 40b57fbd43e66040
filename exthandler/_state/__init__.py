"""State: the state dir, its lock, journal, handler dirs, recovery and certificate."""

"""Extension policy and package signatures: the administrator's policy file, what it
decides for each extension of a goal state, and the verification of signed packages."""

"""Reliability and security suite (issue 8): bad input, fuzzing, auth, load and faults."""

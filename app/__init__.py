"""PhotoScore HTTP service, settings, catalogue database and command line."""

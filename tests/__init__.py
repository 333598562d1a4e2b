"""PhotoScore test suite: one folder per layer (core, api, services, model, indexer), deploy and
reliability; shared helpers and fixtures in support/."""

"""Tests of app.api: the HTTP API, its edges, the web page in a browser, replicas."""

"""Helpers shared by the tests: in-process servers, HTTP test servers, the browser harness."""
